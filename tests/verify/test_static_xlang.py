"""Static verifier beyond Python: the C/C++, JavaScript and Go rule packs and flawfinder, on hand-written programs.

Every rule of c_cpp.yaml, javascript.yaml and go.yaml must flag its flaw and not the documented fix of its CWE
(written here from CWE descriptions, not taken from any data set). One semgrep batch for the module.
"""

import os

import pytest
import yaml

from tsp_jax.verify import static
from tsp_jax.verify.types import Task

# (rule id, language, task CWE, vulnerable program, fixed program)
PAIRS = [
    ('c-use-after-free', 'c', 'CWE-416',
     '#include <stdlib.h>\nstruct node { int v; struct node *next; };\nint pop(struct node *n) { free(n); return n->v; }\n',
     '#include <stdlib.h>\nstruct node { int v; struct node *next; };\nint pop(struct node *n) { int v = n->v; free(n); n = NULL; return v; }\n'),
    ('c-allocation-unchecked', 'c', 'CWE-476',
     '#include <stdlib.h>\n#include <string.h>\nchar *dup_name(const char *s, size_t n) { char *p = malloc(n + 1); memcpy(p, s, n); p[n] = 0; return p; }\n',
     '#include <stdlib.h>\n#include <string.h>\nchar *dup_name(const char *s, size_t n) { char *p = malloc(n + 1); if (!p) return NULL; memcpy(p, s, n); p[n] = 0; return p; }\n'),
    ('c-allocation-size-multiplied', 'c', 'CWE-190',
     '#include <stdlib.h>\nint *make(size_t rows, size_t cols) { return malloc(rows * cols); }\n',
     '#include <stdlib.h>\nint *make(size_t rows, size_t cols) { return calloc(rows, cols); }\n'),
    ('c-shell-command-from-data', 'c', 'CWE-078',
     '#include <stdio.h>\n#include <stdlib.h>\nint ping(const char *host) { char cmd[256]; snprintf(cmd, sizeof cmd, "ping -c 1 %s", host); return system(cmd); }\n',
     '#include <unistd.h>\n#include <sys/wait.h>\nint ping(const char *host) { pid_t p = fork(); if (p == 0) { execlp("ping", "ping", "-c", "1", host, (char *)NULL); _exit(127); } int st; waitpid(p, &st, 0); return st; }\n'),
    ('c-format-string-from-data', 'c', 'CWE-134',
     '#include <stdio.h>\nvoid log_msg(const char *msg) { printf(msg); }\n',
     '#include <stdio.h>\nvoid log_msg(const char *msg) { printf("%s", msg); }\n'),
    ('c-unbounded-copy', 'c', 'CWE-787',
     '#include <string.h>\nvoid set_name(char dst[32], const char *name) { strcpy(dst, name); }\n',
     '#include <stdio.h>\nvoid set_name(char dst[32], const char *name) { snprintf(dst, 32, "%s", name); }\n'),
    ('js-shell-command-from-data', 'javascript', 'CWE-078',
     "const cp = require('child_process');\nfunction info(file) { return cp.execSync('pdfinfo ' + file).toString(); }\n",
     "const cp = require('child_process');\nfunction info(file) { return cp.execFileSync('pdfinfo', [file]).toString(); }\nfunction m(re, s) { return /a+/.exec(s); }\n"),
    ('js-html-sink-from-data', 'javascript', 'CWE-079',
     "function show(query) { document.getElementById('h').innerHTML = 'Results for: ' + query; }\n",
     "function show(query) { document.getElementById('h').textContent = 'Results for: ' + query; }\n"),
    ('js-response-html-from-request', 'javascript', 'CWE-079',
     "const express = require('express');\nconst app = express();\napp.get('/hi', (req, res) => { res.send('<h1>Hello ' + req.query.name + '</h1>'); });\n",
     "const express = require('express');\nconst escapeHtml = require('escape-html');\nconst app = express();\napp.get('/hi', (req, res) => { res.send('<h1>Hello ' + escapeHtml(req.query.name) + '</h1>'); });\n"),
    ('js-sql-built-from-strings', 'javascript', 'CWE-089',
     "function find(db, name, cb) { db.all(`SELECT * FROM users WHERE name = '${name}'`, cb); }\n",
     "function find(db, name, cb) { db.all('SELECT * FROM users WHERE name = ?', [name], cb); }\n"),
    ('js-eval-from-data', 'javascript', 'CWE-095',
     "function calc(expr) { return eval('(' + expr + ')'); }\n",
     'function calc(expr) { return JSON.parse(expr); }\nfunction later(fn) { setTimeout(fn, 10); }\n'),
    ('js-path-from-request', 'javascript', 'CWE-022',
     "const fs = require('fs'); const path = require('path');\nfunction read(req, res) { res.send(fs.readFileSync(path.join('/srv/files', req.query.name))); }\n",
     "const fs = require('fs'); const path = require('path');\nfunction read(req, res) { res.send(fs.readFileSync(path.join('/srv/files', path.basename(req.query.name)))); }\n"),
    ('js-prototype-pollution', 'javascript', 'CWE-915',
     'function merge(dst, src) { for (const k in src) { dst[k] = src[k]; } return dst; }\n',
     "function merge(dst, src) { for (const k in src) { if (k === '__proto__' || k === 'constructor') continue; dst[k] = src[k]; } return dst; }\n"),
    ('js-weak-hash-or-cipher', 'javascript', 'CWE-328',
     "const crypto = require('crypto');\nfunction h(p) { return crypto.createHash('md5').update(p).digest('hex'); }\n",
     "const crypto = require('crypto');\nfunction h(p) { return crypto.createHash('sha256').update(p).digest('hex'); }\n"),
    ('js-math-random-for-secret', 'javascript', 'CWE-338',
     'function makeToken() { const token = Math.random().toString(36).slice(2); return token; }\n',
     "const crypto = require('crypto');\nfunction makeToken() { const token = crypto.randomBytes(16).toString('hex'); return token; }\n"),
    ('js-regex-from-data', 'javascript', 'CWE-1333',
     'function has(pattern, s) { return new RegExp(pattern).test(s); }\n',
     "const escapeStringRegexp = require('escape-string-regexp');\nfunction has(pattern, s) { return new RegExp(escapeStringRegexp(pattern)).test(s); }\n"),
    ('go-sql-built-from-strings', 'go', 'CWE-089',
     'package main\nimport ("database/sql"; "fmt")\nfunc find(db *sql.DB, name string) (*sql.Rows, error) { return db.Query(fmt.Sprintf("SELECT * FROM users WHERE name = \'%s\'", name)) }\n',
     'package main\nimport "database/sql"\nfunc find(db *sql.DB, name string) (*sql.Rows, error) { return db.Query("SELECT * FROM users WHERE name = ?", name) }\n'),
    ('go-shell-command-from-data', 'go', 'CWE-078',
     'package main\nimport "os/exec"\nfunc ls(dir string) ([]byte, error) { return exec.Command("sh", "-c", "ls -l "+dir).Output() }\n',
     'package main\nimport "os/exec"\nfunc ls(dir string) ([]byte, error) { return exec.Command("ls", "-l", "--", dir).Output() }\n'),
    ('go-html-from-data', 'go', 'CWE-079',
     'package main\nimport ("fmt"; "net/http")\nfunc hello(w http.ResponseWriter, r *http.Request) { name := r.URL.Query().Get("name"); fmt.Fprintf(w, "<h1>Hello %s</h1>", name) }\n',
     'package main\nimport ("fmt"; "html"; "net/http")\nfunc hello(w http.ResponseWriter, r *http.Request) { name := r.URL.Query().Get("name"); fmt.Fprintf(w, "<h1>Hello %s</h1>", html.EscapeString(name)) }\n'),
    ('go-narrowing-integer-conversion', 'go', 'CWE-681',
     'package main\nimport "strconv"\nfunc port(s string) (int32, error) {\n\tn, err := strconv.Atoi(s)\n\tif err != nil { return 0, err }\n\treturn int32(n), nil\n}\n',
     'package main\nimport "strconv"\nfunc port(s string) (int32, error) {\n\tn, err := strconv.ParseInt(s, 10, 32)\n\tif err != nil { return 0, err }\n\treturn int32(n), nil\n}\n'),
    ('go-small-rsa-key', 'go', 'CWE-326',
     'package main\nimport ("crypto/rand"; "crypto/rsa")\nfunc key() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 1024) }\n',
     'package main\nimport ("crypto/rand"; "crypto/rsa")\nfunc key() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 3072) }\n'),
    ('go-path-from-request', 'go', 'CWE-022',
     'package main\nimport ("net/http"; "os"; "path/filepath")\nfunc get(w http.ResponseWriter, r *http.Request) { f, _ := os.Open(filepath.Join("/srv", r.URL.Query().Get("f"))); defer f.Close() }\n',
     'package main\nimport ("net/http"; "os"; "path/filepath")\nfunc get(w http.ResponseWriter, r *http.Request) { f, _ := os.Open(filepath.Join("/srv", filepath.Base(r.URL.Query().Get("f")))); defer f.Close() }\n'),
]
# Rules whose fix is dropping the call: (rule id, language, task CWE, vulnerable program).
HITS = [
    ('js-open-redirect', 'javascript', 'CWE-601', 'function go(req, res) { res.redirect(req.query.next); }\n'),
    ('js-error-details-to-client', 'javascript', 'CWE-209', 'function handler(req, res) { try { work(); } catch (err) { res.status(500).send(err.stack); } }\n'),
    ('go-tls-insecure-skip-verify', 'go', 'CWE-295', 'package main\nimport ("crypto/tls"; "net/http")\nfunc client() *http.Client { return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} }\n'),
    ('go-weak-hash-or-cipher', 'go', 'CWE-328', 'package main\nimport ("crypto/md5"; "fmt")\nfunc sum(b []byte) string { return fmt.Sprintf("%x", md5.Sum(b)) }\n'),
    ('go-math-rand-for-secret', 'go', 'CWE-338', 'package main\nimport "math/rand"\nfunc makeToken() int { return rand.Intn(1000000) }\n'),
]
# Documented fixes no rule of their CWE may flag: (language, task CWE, program).
SECURE = [
    ("javascript", "CWE-079", "function addRow(tbody, cells) { const tr = document.createElement('tr'); "
                              "tbody.append(tr); }\n"),
    ("javascript", "CWE-079", "function noResults(el, q) { el.html('<p>No match: ' + $('<div/>').text(q).html() + "
                              "'</p>'); }\n"),
]
RULE_FILES = ("c_cpp.yaml", "javascript.yaml", "go.yaml")


@pytest.fixture(scope="module")
def scanned() -> dict[str, list]:
  """Composite findings (semgrep + flawfinder) of every program, from one batch."""
  programs = list(dict.fromkeys([(lang, p) for _, lang, _, v, f in PAIRS for p in (v, f)]
                                + [(lang, v) for _, lang, _, v in HITS] + [(lang, p) for lang, _, p in SECURE]))
  found = static.composite_findings([p for _, p in programs], [lang for lang, _ in programs],
                                    static.SemgrepScanner(), static.FlawfinderScanner())
  return {p: f for (_, p), f in zip(programs, found)}


@pytest.mark.parametrize("rule,language,cwe,vulnerable,fixed", PAIRS, ids=[p[0] for p in PAIRS])
def test_rule_flags_the_flaw_not_its_fix(scanned, rule, language, cwe, vulnerable, fixed):
  del language
  assert rule in {f.test_id for f in scanned[vulnerable]}, scanned[vulnerable]
  assert rule not in {f.test_id for f in scanned[fixed]}, scanned[fixed]
  task = Task(id="pair", cwe=cwe)
  assert not static.static_verdict(task, vulnerable, scanned[vulnerable])[0]
  assert static.static_verdict(task, fixed, scanned[fixed])[0], scanned[fixed]


@pytest.mark.parametrize("rule,language,cwe,vulnerable", HITS, ids=[p[0] for p in HITS])
def test_rule_hits(scanned, rule, language, cwe, vulnerable):
  del language
  assert rule in {f.test_id for f in scanned[vulnerable]}, scanned[vulnerable]
  assert not static.static_verdict(Task(id="hit", cwe=cwe), vulnerable, scanned[vulnerable])[0]


@pytest.mark.parametrize("language,cwe,program", SECURE)
def test_documented_fixes_not_flagged(scanned, language, cwe, program):
  del language
  assert static.static_verdict(Task(id="fix", cwe=cwe), program, scanned[program])[0], scanned[program]


def test_every_rule_is_exercised():
  ids = set()
  for name in RULE_FILES:
    with open(os.path.join(static.RULES_DIR, name), encoding="utf-8") as f:
      ids |= {r["id"] for r in yaml.safe_load(f)["rules"]}
  assert ids == {p[0] for p in PAIRS} | {p[0] for p in HITS}


def test_flawfinder_findings_carry_cwe_and_place(scanned):
  code = next(v for rule, _, _, v, _ in PAIRS if rule == "c-unbounded-copy")
  (f,) = [f for f in scanned[code] if f.tool == "flawfinder"]
  assert f.test_id == "strcpy" and f.cwe == "CWE-120" and f.severity == "HIGH"
  assert code[f.offset:].startswith("strcpy(")
  assert static.cwe_relevant(f.cwe, "CWE-787")  # a bounds finding speaks to an out-of-bounds write task


def test_languages_are_checked():
  with pytest.raises(ValueError, match="unknown language"):
    static.language_extension("cobol")
  with pytest.raises(ValueError, match="2 languages for 1 programs"):
    static.SemgrepScanner().scan(["x = 1\n"], ["python", "c"])
  assert static.FlawfinderScanner().scan(["import os\n"], ["python"]) == [[]]
