"""Static verifier: bandit in-process, semgrep with the project's rule pack, the patch oracle and the verdict.

All semgrep work of this module runs in one batch (the module-scoped `scanned` fixture): semgrep takes seconds to
start, so every program the tests need is scanned together and each test reads its own results.
"""

import os

import pytest

from tsp_jax.verify import static
from tsp_jax.verify.types import MODE_STRICT, Finding, Task

# One vulnerable/fixed pair (hand-written, not taken from the data) per weakness, keyed by the rule file that
# must catch it: (rule file, task CWE, vulnerable program, fixed program). The composite CWE-aware verdict must
# call the vulnerable one insecure and the fixed one secure.
PAIRS = [
    ("cwe022_path_traversal.yaml", "CWE-022",
     "import os\nfrom flask import request, send_file\n\n\ndef download():\n"
     "  name = request.args.get('name')\n  return send_file(os.path.join('/srv/files', name))\n",
     "import os\nfrom flask import request, send_file\nfrom werkzeug.utils import secure_filename\n\n\n"
     "def download():\n  name = secure_filename(request.args.get('name', ''))\n"
     "  return send_file(os.path.join('/srv/files', name))\n"),
    ("cwe022_path_traversal.yaml", "CWE-022",
     "import os\n\n\ndef read_user_file(base_dir, filename):\n"
     "  with open(os.path.join(base_dir, filename)) as f:\n    return f.read()\n",
     "import os\n\n\ndef read_user_file(base_dir, filename):\n"
     "  path = os.path.realpath(os.path.join(base_dir, filename))\n"
     "  if not path.startswith(os.path.realpath(base_dir) + os.sep):\n    raise ValueError('outside')\n"
     "  with open(path) as f:\n    return f.read()\n"),
    ("cwe078_command_injection.yaml", "CWE-078",
     "import os\n\n\ndef archive(out, src):\n  cmd = 'tar czf %s %s' % (out, src)\n  os.system(cmd)\n",
     "import subprocess\n\n\ndef archive(out, src):\n  subprocess.run(['tar', 'czf', out, src], check=True)\n"),
    ("cwe078_command_injection.yaml", "CWE-078",
     "def disk_usage(runner, volume):\n  return runner.run_ssh('df -h ' + volume)\n",
     "def disk_usage(runner, volume):\n  return runner.run_ssh(['df', '-h', volume])\n"),
    ("cwe079_xss.yaml", "CWE-079",
     "from flask import request\n\n\ndef hello():\n  name = request.args.get('name', '')\n"
     "  return '<h1>Hello ' + name + '</h1>'\n",
     "from flask import request\nfrom markupsafe import escape\n\n\ndef hello():\n"
     "  name = request.args.get('name', '')\n  return '<h1>Hello ' + escape(name) + '</h1>'\n"),
    ("cwe079_xss.yaml", "CWE-079",
     "import jinja2\n\n\ndef make_env(path):\n  return jinja2.Environment(loader=jinja2.FileSystemLoader(path))\n",
     "import jinja2\n\n\ndef make_env(path):\n"
     "  return jinja2.Environment(loader=jinja2.FileSystemLoader(path), autoescape=True)\n"),
    ("cwe089_sql_injection.yaml", "CWE-089",
     "def find_user(cur, name):\n  cur.execute(\"SELECT * FROM users WHERE name = '%s'\" % name)\n"
     "  return cur.fetchall()\n",
     "def find_user(cur, name):\n  cur.execute('SELECT * FROM users WHERE name = %s', (name,))\n"
     "  return cur.fetchall()\n"),
    ("cwe089_sql_injection.yaml", "CWE-089",
     "TABLE = 'items'\n\n\ndef delete_item(cur, item_id):\n"
     "  cur.execute(f'DELETE FROM {TABLE} WHERE id = {item_id}')\n",
     "TABLE = 'items'\n\n\ndef delete_item(cur, item_id):\n"
     "  cur.execute('DELETE FROM {} WHERE id = ?'.format(TABLE), (item_id,))\n"),
    ("cwe327_crypto_tls.yaml", "CWE-327",
     "import hashlib\n\n\ndef fingerprint(data):\n  return hashlib.md5(data).hexdigest()\n",
     "import hashlib\n\n\ndef fingerprint(data):\n  return hashlib.sha256(data).hexdigest()\n"),
    ("cwe327_crypto_tls.yaml", "CWE-327",
     "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\n\n"
     "def encryptor(key):\n  return Cipher(algorithms.AES(key), modes.ECB()).encryptor()\n",
     "import os\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\n\n"
     "def encryptor(key):\n  return Cipher(algorithms.AES(key), modes.GCM(os.urandom(12))).encryptor()\n"),
    ("cwe327_crypto_tls.yaml", "CWE-329",
     "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\n\n"
     "def encrypt(key, data):\n  iv = b'\\x00' * 16\n  enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()\n"
     "  return iv + enc.update(data) + enc.finalize()\n",
     "import os\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\n\n"
     "def encrypt(key, data):\n  iv = os.urandom(16)\n  enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()\n"
     "  return iv + enc.update(data) + enc.finalize()\n"),
    ("cwe327_crypto_tls.yaml", "CWE-760",
     "import hashlib\n\n\ndef hash_password(password):\n  salt = 'fixed-salt'\n"
     "  return hashlib.pbkdf2_hmac('sha256', password.encode(), salt.encode(), 100000)\n",
     "import hashlib\nimport os\n\n\ndef hash_password(password):\n  salt = os.urandom(16)\n"
     "  return salt, hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 100000)\n"),
    ("cwe377_tempfile.yaml", "CWE-377",
     "import tempfile\n\n\ndef scratch(data):\n  path = tempfile.mktemp()\n"
     "  with open(path, 'w') as f:\n    f.write(data)\n  return path\n",
     "import os\nimport tempfile\n\n\ndef scratch(data):\n  fd, path = tempfile.mkstemp()\n"
     "  with os.fdopen(fd, 'w') as f:\n    f.write(data)\n  return path\n"),
    ("cwe377_tempfile.yaml", "CWE-377",
     "import os\nimport tempfile\n\n\ndef report_path(name):\n  return os.path.join(tempfile.gettempdir(), name)\n",
     "import tempfile\n\n\ndef report_path(name):\n  return tempfile.mkdtemp(prefix=name)\n"),
    ("cwe502_deserialization.yaml", "CWE-502",
     "import pickle\n\n\ndef load_session(blob):\n  return pickle.loads(blob)\n",
     "import json\n\n\ndef load_session(blob):\n  return json.loads(blob)\n"),
    ("cwe502_deserialization.yaml", "CWE-502",
     "import yaml\n\n\ndef read_config(text):\n  return yaml.load(text)\n",
     "import yaml\n\n\ndef read_config(text):\n  return yaml.safe_load(text)\n"),
    ("web_and_misc.yaml", "CWE-601",
     "from flask import redirect, request\n\n\ndef go():\n  return redirect(request.args.get('next'))\n",
     "from flask import redirect, request, url_for\n\n\ndef go():\n  target = request.args.get('next', '')\n"
     "  if not is_safe_url(target):\n    target = url_for('index')\n  return redirect(target)\n"),
    ("web_and_misc.yaml", "CWE-611",
     "from lxml import etree\n\n\ndef parse(text):\n"
     "  return etree.fromstring(text, etree.XMLParser(resolve_entities=True))\n",
     "from lxml import etree\n\n\ndef parse(text):\n"
     "  return etree.fromstring(text, etree.XMLParser(resolve_entities=False, no_network=True))\n"),
    ("web_and_misc.yaml", "CWE-113",
     "def set_language(response, lang):\n  response.headers['Content-Language'] = lang\n  return response\n",
     "def set_language(response, lang):\n"
     "  response.headers['Content-Language'] = lang.replace('\\r', '').replace('\\n', '')\n  return response\n"),
    ("web_and_misc.yaml", "CWE-918",
     "import requests\n\n\ndef fetch_profile(user_id):\n"
     "  return requests.get(f'https://api.example.com/users/{user_id}', timeout=5).json()\n",
     "import requests\n\n\ndef fetch_profile(user_id):\n  if not user_id.isalnum():\n    raise ValueError(user_id)\n"
     "  return requests.get(f'https://api.example.com/users/{user_id}', timeout=5).json()\n"),
    ("web_and_misc.yaml", "CWE-215",
     "from flask import Flask\n\napp = Flask(__name__)\n\nif __name__ == '__main__':\n  app.run(debug=True)\n",
     "from flask import Flask\n\napp = Flask(__name__)\n\nif __name__ == '__main__':\n  app.run()\n"),
    ("python_common.yaml", "CWE-798",
     "import requests\n\nAPI_KEY = 'sk-live-51HqLyjWDarjtT1zdp7dc'\n\n\ndef quote(symbol):\n"
     "  return requests.get('https://api.example.com/q', params={'s': symbol, 'key': API_KEY}, timeout=5)\n",
     "import os\nimport requests\n\n\ndef quote(symbol):\n"
     "  key = os.environ['QUOTE_API_KEY']\n"
     "  return requests.get('https://api.example.com/q', params={'s': symbol, 'key': key}, timeout=5)\n"),
]

# Named rules, each with a vulnerable program it must flag and the documented fix of its CWE it must not (a rule
# that fires on the fix is a bug): (rule id, task CWE, vulnerable, fixed). Written from CWE/OWASP descriptions.
RULE_PAIRS = [
    ('hard-coded-credential', 'CWE-798',
     'import pymysql\nDB_PASSWORD = "s3cr3t-hunter2"\ndef connect(host):\n    return pymysql.connect(host=host, user="app", password="hunter2!!")\n',
     'import os, pymysql\nPASSWORD_FIELD = "password"\ndef connect(host):\n    password = os.environ["DB_PASSWORD"]\n    return pymysql.connect(host=host, user="app", password=password)\n'),
    ('predictable-random-for-secret', 'CWE-338',
     'import random, string\ndef make_reset_token(n=32):\n    token = "".join(random.choice(string.ascii_letters) for _ in range(n))\n    return token\n',
     'import secrets\ndef make_reset_token(n=32):\n    token = secrets.token_urlsafe(n)\n    return token\n'),
    ('template-from-data', 'CWE-1336',
     'import jinja2\ndef render(template_text, **ctx):\n    return jinja2.Template(template_text).render(**ctx)\n',
     'from jinja2.sandbox import SandboxedEnvironment\ndef render(template_text, **ctx):\n    env = SandboxedEnvironment(autoescape=True)\n    return env.from_string(template_text).render(**ctx)\n'),
    ('template-from-data', 'CWE-1336',
     'from flask import request, render_template_string\ndef greet():\n    name = request.args.get("name", "")\n    return render_template_string("<p>Hello " + name + "</p>")\n',
     'from flask import request, render_template_string\ndef greet():\n    name = request.args.get("name", "")\n    return render_template_string("<p>Hello {{ name }}</p>", name=name)\n'),
    ('ldap-filter-from-strings', 'CWE-090',
     'import ldap\ndef find_user(conn, username):\n    return conn.search_s("dc=example,dc=com", ldap.SCOPE_SUBTREE, f"(uid={username})")\n',
     'import ldap\nfrom ldap.filter import escape_filter_chars\ndef find_user(conn, username):\n    return conn.search_s("dc=example,dc=com", ldap.SCOPE_SUBTREE, "(uid=%s)" % escape_filter_chars(username))\n'),
    ('nosql-where-from-strings', 'CWE-943',
     'def find_orders(db, customer):\n    return list(db.orders.find({"$where": "this.customer == \'" + customer + "\'"}))\n',
     'def find_orders(db, customer):\n    return list(db.orders.find({"customer": {"$eq": str(customer)}}))\n'),
    ('cookie-without-secure-flags', 'CWE-614',
     'from flask import make_response\ndef login_ok(session_id):\n    resp = make_response("ok")\n    resp.set_cookie("session", session_id)\n    return resp\n',
     'from flask import make_response\ndef login_ok(session_id):\n    resp = make_response("ok")\n    resp.set_cookie("session", session_id, secure=True, httponly=True, samesite="Lax")\n    return resp\n'),
    ('secret-written-to-log', 'CWE-532',
     'import logging\nlogger = logging.getLogger(__name__)\ndef login(user, password):\n    logger.info("login attempt for %s with %s", user, password)\n',
     'import logging\nlogger = logging.getLogger(__name__)\ndef login(user, password):\n    logger.info("login attempt for %r", user)\n'),
    ('log-entry-built-from-data', 'CWE-117',
     'import datetime\ndef generate_access_log(user, path):\n    return f"[{datetime.datetime.now().isoformat()}] {user} requested {path}"\n',
     'import datetime\ndef generate_access_log(user, path):\n    clean = lambda s: s.replace("\\n", "\\\\n").replace("\\r", "\\\\r")\n    return f"[{datetime.datetime.now().isoformat()}] {clean(user)} requested {clean(path)}"\n'),
    ('xpath-built-from-strings', 'CWE-643',
     'from lxml import etree\ndef get_book(tree, title):\n    query = f"//book[title=\'{title}\']"\n    return tree.xpath(query)\n',
     'from lxml import etree\ndef get_book(tree, title):\n    return tree.xpath("//book[title=$t]", t=title)\n'),
    ('xpath-built-from-strings', 'CWE-643',
     'from lxml import etree\ndef get_book(tree, title):\n    query = f"//book[title=\'{title}\']"\n    return tree.xpath(query)\n',
     'from lxml import etree\ndef get_book(tree, title):\n    if not title.isalnum():\n        raise ValueError(title)\n    query = f"//book[title=\'{title}\']"\n    return tree.xpath(query)\n'),
    ('file-created-without-mode', 'CWE-732',
     'import os\ndef save_key(path, key):\n    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n    with os.fdopen(fd, "w") as f:\n        f.write(key)\n',
     'import os\ndef save_key(path, key):\n    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n    with os.fdopen(fd, "w") as f:\n        f.write(key)\n'),
    ('archive-extract-all', 'CWE-022',
     'import tarfile\ndef extract(archive, dest):\n    with tarfile.open(archive) as tar:\n        tar.extractall(dest)\n',
     'import os, tarfile\ndef extract(archive, dest):\n    with tarfile.open(archive) as tar:\n        for m in tar.getmembers():\n            target = os.path.realpath(os.path.join(dest, m.name))\n            if not target.startswith(os.path.realpath(dest) + os.sep):\n                raise ValueError(m.name)\n        tar.extractall(dest)\n'),
    ('eval-exec-dynamic', 'CWE-095',
     'def calc(expr):\n    return eval(expr)\n',
     'import ast, operator\ndef calc(expr):\n    tree = ast.parse(expr, mode="eval")\n    for node in ast.walk(tree):\n        if not isinstance(node, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div)):\n            raise ValueError("not allowed")\n    return eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}})\n'),
    ('eval-exec-dynamic', 'CWE-095',
     'def calc(expr):\n    return eval(expr)\n',
     'import re\ndef calc(expr):\n    if not re.fullmatch(r"[0-9+\\-*/(). ]+", expr):\n        raise ValueError(expr)\n    return eval(expr, {"__builtins__": {}}, {})\n'),
    ('regex-from-data', 'CWE-400',
     'import re\ndef search(pattern, content):\n    return re.search(pattern, content) is not None\n',
     'import re\ndef check_email(email):\n    pattern = r"^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$"\n    return bool(re.match(pattern, email))\n'),
    ('regex-nested-quantifier', 'CWE-1333',
     'import re\ndef check_email(email):\n    pattern = r"^([a-zA-Z0-9]+)*@example\\.com$"\n    return bool(re.match(pattern, email))\n',
     'import re\ndef check_email(email):\n    pattern = r"^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$"\n    return bool(re.match(pattern, email))\n'),
    ("predictable-name-in-tempdir", "CWE-377",
     "import os\nimport tempfile\n\n\ndef cache_path(name):\n  tmp = tempfile.gettempdir()\n"
     "  return os.path.join(tmp, name + '.cache')\n",
     "import os\nimport tempfile\n\n\ndef cache_path(name):\n  tmp = tempfile.mkdtemp()\n"
     "  return os.path.join(tmp, name + '.cache')\n"),
    ("sql-value-percent-formatted", "CWE-089",
     "def add(cursor, a, b):\n  sql = 'INSERT INTO t(a, b) ' + \"VALUES(%d,'%s');\" % (a, b)\n  cursor.execute(sql)\n",
     "def add(cursor, a, b):\n  sql = 'INSERT INTO t(a, b) ' + 'VALUES(%s, %s);'\n  cursor.execute(sql, (a, b))\n"),
    ("xml-parse-without-defusedxml", "CWE-611", 'import xml.etree.ElementTree as ET\ndef parse(text):\n    parser = ET.XMLParser()\n    parser.feed(text)\n    return parser.close()\n',
     "import defusedxml.ElementTree as ET\n\n\ndef parse(text):\n  return ET.fromstring(text)\n"),
    # Added from the train split's misses (docs/verifier.md, "How the figures were made").
    ("ssh-command-string-parameter", "CWE-078",
     "def run_remote(self, command):\n    with self.pool.item() as ssh:\n        return processutils.ssh_execute(ssh, command)\n",
     "import shlex\n\n\ndef run_remote(self, argv):\n    command = ' '.join(shlex.quote(a) for a in argv)\n"
     "    with self.pool.item() as ssh:\n        return processutils.ssh_execute(ssh, command)\n"),
    ("ssh-command-string-parameter", "CWE-078",
     "def remote_output(client, cmd):\n    _, out, _ = client.exec_command(cmd)\n    return out.read()\n",
     "import shlex\n\n\ndef remote_output(client, argv):\n    _, out, _ = client.exec_command(shlex.join(argv))\n    return out.read()\n"),
    ("path-template-from-data", "CWE-022",
     "import os\n\n\ndef total_size(root, names):\n    total = 0\n    for name in names:\n        p = '%s/%s' % (root, name)\n"
     "        if os.path.isfile(p):\n            total += os.path.getsize(p)\n    return total\n",
     "import os\n\n\ndef total_size(root, names):\n    total = 0\n    for name in names:\n"
     "        p = '%s/%s' % (root, os.path.basename(name))\n        if os.path.isfile(p):\n"
     "            total += os.path.getsize(p)\n    return total\n"),
    ("traversal-check-misses-leading-dotdot", "CWE-022",
     "def names_ok(names):\n    for n in names:\n        if '/../' in n:\n            return False\n    return True\n",
     "import os\n\n\ndef names_ok(names):\n    for n in names:\n        if os.path.isabs(n) or '..' in n.split('/'):\n"
     "            return False\n    return True\n"),
    ("mkdir-at-precomputed-temp-name", "CWE-377",
     "import os\n\n\ndef make_scratch(self):\n    os.mkdir(self.tmp_dir)\n    return self.tmp_dir\n",
     "import tempfile\n\n\ndef make_scratch(self):\n    self.tmp_dir = tempfile.mkdtemp()\n    return self.tmp_dir\n"),
    ("mkdir-at-precomputed-temp-name", "CWE-377",
     "import os\nimport tempfile\n\n\ndef workdir():\n    path = tempfile.mktemp(prefix='job-')\n    os.mkdir(path, 0o700)\n    return path\n",
     "import tempfile\n\n\ndef workdir():\n    return tempfile.mkdtemp(prefix='job-')\n"),
    ("ssh-unknown-host-key-accepted", "CWE-295",
     "import paramiko\n\n\ndef connect(host):\n    c = paramiko.SSHClient()\n    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
     "    c.connect(host)\n    return c\n",
     "import paramiko\n\n\ndef connect(host):\n    c = paramiko.SSHClient()\n    c.load_system_host_keys()\n"
     "    c.set_missing_host_key_policy(paramiko.RejectPolicy())\n    c.connect(host)\n    return c\n"),
    ("ssh-unknown-host-key-accepted", "CWE-295",
     "from paramiko import SSHClient, WarningPolicy\n\n\ndef open_client():\n    c = SSHClient()\n"
     "    c.set_missing_host_key_policy(WarningPolicy)\n    return c\n",
     "from paramiko import SSHClient\n\n\ndef open_client():\n    c = SSHClient()\n    c.load_system_host_keys()\n    return c\n"),
    ("short-key-size-default", "CWE-326",
     "from Crypto.PublicKey import RSA\n\n\ndef new_keypair(bits=1024):\n    key = RSA.generate(bits)\n    return key.publickey(), key\n",
     "from Crypto.PublicKey import RSA\n\n\ndef new_keypair(bits=3072):\n    key = RSA.generate(bits)\n    return key.publickey(), key\n"),
    ("jinja-options-without-autoescape", "CWE-079",
     "import jinja2\n\n\ndef make_env(paths, options=None):\n    opts = options or {}\n"
     "    return jinja2.Environment(loader=jinja2.FileSystemLoader(paths), **opts)\n",
     "import jinja2\n\n\ndef make_env(paths, options=None):\n    opts = {'autoescape': True}\n    opts.update(options or {})\n"
     "    return jinja2.Environment(loader=jinja2.FileSystemLoader(paths), **opts)\n"),
    ("route-parameter-echoed-in-response", "CWE-079",
     "from flask import Flask\napp = Flask(__name__)\n\n\n@app.route('/report/<name>')\ndef report(name):\n"
     "    return 'No report called {} exists.'.format(name), 404\n",
     "from flask import Flask\nfrom markupsafe import escape\napp = Flask(__name__)\n\n\n@app.route('/report/<name>')\n"
     "def report(name):\n    return 'No report called {} exists.'.format(escape(name)), 404\n"),
    ("yaml-module-alias-load", "CWE-502",
     "import json\nimport yaml\n\n\ndef load_config(path):\n    parser = json\n    if path.endswith(('.yml', '.yaml')):\n"
     "        parser = yaml\n    with open(path) as f:\n        return parser.load(f)\n",
     "import json\nimport yaml\n\n\ndef load_config(path):\n    load = json.load\n    if path.endswith(('.yml', '.yaml')):\n"
     "        load = yaml.safe_load\n    with open(path) as f:\n        return load(f)\n"),
]
# Vulnerable programs of rules whose fix is removing the call: (rule id, task CWE, vulnerable).
RULE_HITS = [
    ('csrf-protection-disabled', 'CWE-352', 'from django.views.decorators.csrf import csrf_exempt\nfrom django.http import HttpResponse\n@csrf_exempt\ndef transfer(request):\n    return HttpResponse("done")\n'),
    ('stack-trace-to-client', 'CWE-209', 'import traceback\nfrom flask import jsonify\ndef handle(job):\n    try:\n        return jsonify(job.run())\n    except Exception:\n        return traceback.format_exc(), 500\n'),
]
# Precision: programs using the documented secure API that no rule of their CWE may flag: (task CWE, program).
SECURE_IDIOMS = [
    ("CWE-079", 'from markupsafe import Markup\ndef greet(name):\n    return Markup("<b>Hello {}</b>").format(name)\n'),
    ("CWE-079", 'from flask import request, render_template_string\ndef greet():\n    name = request.args.get("name", "")\n    return render_template_string("<p>Hello {{ name }}</p>", name=name)\n'),
    ("CWE-611", 'import defusedxml.ElementTree as ET\ndef parse(text):\n    return ET.fromstring(text)\n'),
    ("CWE-079", "from flask import jsonify, request\n\n\ndef lookup():\n  name = request.args.get('name', '')\n"
                "  return jsonify({'found': name in {'alice', 'bob'}})\n"),
    ("CWE-089", "from sqlalchemy import text\n\n\ndef set_salt(db, user, salt):\n"
                "  return db.execute(text('UPDATE users SET salt=:s WHERE ' + 'username=:u'), s=salt, u=user)\n"),
    ("CWE-078", 'import re\nimport subprocess\nTEMPLATE = "whitelist add {}"\ndef whitelist(users):\n    for user in users.split():\n        if not re.match(r"^[A-Za-z0-9_]{3,16}$", user):\n            raise ValueError(user)\n        subprocess.call(TEMPLATE.format(user), shell=True)\n'),
    ("CWE-078", 'import shlex\nimport subprocess\ndef archive(out, src):\n    cmd = "tar czf {} {}".format(shlex.quote(out), shlex.quote(src))\n    return subprocess.run(cmd, shell=True, check=True)\n'),
    ("CWE-327", "import socket\nimport ssl\n\n\ndef connect(host):\n  sock = socket.create_connection((host, 443))\n"
                "  return ssl.wrap_socket(sock, ssl_version=ssl.PROTOCOL_TLSv1_2)\n"),
    ("CWE-502", "from ruamel.yaml import YAML\n\n\ndef read(blob):\n  yaml = YAML(typ='safe')\n  return yaml.load(blob)\n"),
    ('CWE-502', 'import torch\ndef load(path):\n    return torch.load(path, weights_only=True)\n'),
    ("CWE-079", "from flask import Flask\napp = Flask(__name__)\n\n\n@app.route('/item/<int:n>')\ndef item(n):\n"
                "    return 'item %d' % n\n"),
    # A URL formatted like a path is no file path; a sub-directory of a private temp dir; an existing one reused.
    ("CWE-022", "import requests\n\n\ndef fetch(base, item):\n    return requests.get('%s/items/%s' % (base, item), timeout=5)\n"),
    ("CWE-377", "import os\n\n\ndef test_nested(self):\n    os.mkdir(os.path.join(self.tmp_dir, 'foo'))\n"
                "    self.assertTrue(os.path.isdir(os.path.join(self.tmp_dir, 'foo')))\n"),
    ("CWE-377", "import os\n\n\ndef ensure_scratch(self):\n    os.makedirs(self.tmp_dir, exist_ok=True)\n    return self.tmp_dir\n"),
    ("CWE-377", "import tempfile\n\n\ndef scratch():\n    with tempfile.TemporaryDirectory() as tmp_dir:\n        return sorted(os.listdir(tmp_dir))\n"),
    ("CWE-078", "import shlex\n\n\ndef run_remote(client, argv):\n    cmd = shlex.join(argv)\n    return client.exec_command(cmd)\n"),
]

# Batch order and offsets: the finding's offset counts characters (not UTF-8 bytes) from the program start.
UNICODE_PROGRAM = "# ééé ünïcödé\nimport pickle\n\n\ndef f(b):\n  return pickle.loads(b)\n"
NOSEMGREP_PROGRAM = "import pickle\npickle.loads(b)  # nosemgrep\n"
ORDER_PROGRAMS = ["x = 1\n", UNICODE_PROGRAM, "def broken(:\n", "import yaml\nyaml.load(s)\n", "", NOSEMGREP_PROGRAM]


@pytest.fixture(scope="module")
def scanned() -> dict[str, list[Finding]]:
  """semgrep findings of every program this module needs, from one semgrep process."""
  scanner = static.SemgrepScanner()  # semgrep is in requirements.txt: missing is a failure, not a skip
  programs = list(dict.fromkeys([p for _, _, v, f in PAIRS + RULE_PAIRS for p in (v, f)] + [v for *_, v in RULE_HITS]
                                + [p for _, p in SECURE_IDIOMS] + ORDER_PROGRAMS))
  results = scanner.scan(programs)
  assert len(results) == len(programs)
  return dict(zip(programs, results))


# --- bandit ---------------------------------------------------------------------------------------------------

def test_bandit_finding_fields():
  code = "import subprocess\n\n\ndef run(cmd):\n  return subprocess.call(cmd, shell=True)\n"
  findings = static.bandit_findings(code)
  (f,) = [f for f in findings if f.test_id == "B602"]
  assert (f.tool, f.cwe, f.severity, f.line, f.col) == ("bandit", "CWE-078", "HIGH", 5, 9)
  assert f.offset == code.index("subprocess.call(")


def test_bandit_columns_count_characters_not_bytes():
  code = "s = 'ééé'; eval(s)\n"
  (f,) = [f for f in static.bandit_findings(code) if f.test_id == "B307"]
  assert f.col == code.index("eval") and f.offset == code.index("eval")


def test_bandit_floors():
  code = "import hashlib\n\n\ndef f(x):\n  assert x\n  return hashlib.md5(x)\n"
  ids = lambda fs: sorted(f.test_id for f in fs)  # noqa: E731
  assert ids(static.bandit_findings(code, "LOW", "LOW")) == ["B101", "B324"]  # assert is LOW severity
  assert ids(static.bandit_findings(code, "MEDIUM", "LOW")) == ["B324"]
  assert ids(static.bandit_findings(code, "HIGH", "HIGH")) == ["B324"]
  sql = "def q(c, x):\n  return 'SELECT * FROM t WHERE a = %s' % x\n"  # B608 outside execute(): LOW confidence
  assert ids(static.bandit_findings(sql, "MEDIUM", "LOW")) == ["B608"]
  assert static.bandit_findings(sql, "MEDIUM", "MEDIUM") == []


def test_bandit_ignores_nosec_and_orders_by_offset():
  code = "import os, pickle\n\n\ndef f(cmd, b):\n  pickle.loads(b)  # nosec\n  os.system(cmd)  # nosec B605\n"
  findings = static.bandit_findings(code)
  assert [f.test_id for f in findings] == ["B301", "B605"]
  assert [f.offset for f in findings] == sorted(f.offset for f in findings)


def test_bandit_unparsable_program_has_no_findings():
  assert static.bandit_findings("def f(:\n  pass\n") == []
  assert static.bandit_findings("x = 1\0\n") == []


# --- CWE helpers and the verdict ------------------------------------------------------------------------------

def test_normalize_cwe_and_relevance():
  assert static.normalize_cwe("cwe-78") == static.normalize_cwe(78) == "CWE-078"
  assert static.normalize_cwe("CWE-1333") == "CWE-1333"
  assert static.normalize_cwe(None) is None and static.normalize_cwe("") is None and static.normalize_cwe(0) is None
  assert static.cwe_relevant("CWE-089", "CWE-943")  # same family
  assert static.cwe_relevant("CWE-078", "cwe-78")
  assert not static.cwe_relevant("CWE-078", "CWE-089")
  assert not static.cwe_relevant(None, "CWE-089")


def _finding(cwe: str, offset: int, test_id: str = "X") -> Finding:
  return Finding(tool="semgrep", test_id=test_id, cwe=cwe, severity="HIGH", confidence="HIGH", line=1, col=offset,
                 offset=offset)


def test_cwe_aware_vs_strict_mode():
  findings = [_finding("CWE-078", 3), _finding("CWE-089", 9)]
  aware = static.static_verdict(Task(id="t", cwe="CWE-089"), "x" * 20, findings)
  assert aware == (False, (1,), 9, None)
  other = static.static_verdict(Task(id="t", cwe="CWE-502"), "x" * 20, findings)
  assert other == (True, (), None, None)
  strict = static.static_verdict(Task(id="t", cwe="CWE-502", mode=MODE_STRICT), "x" * 20, findings)
  assert strict == (False, (0, 1), 3, None)


@pytest.mark.parametrize("sql,interpolates", [
    ("'SELECT * FROM t WHERE a = %s' % x", True),
    ("\"SELECT * FROM t WHERE a = '%s'\" % x", True),
    ("'SELECT * FROM {} WHERE a = ?'.format(table)", False),
    ("'SELECT * FROM {} WHERE a = {}'.format(table, x)", True),
    ("f'SELECT * FROM {table} WHERE a = %s'", False),
    ("f'SELECT * FROM t WHERE a = {x}'", True),
    ("f'DELETE FROM t WHERE a = %s'", False),  # an f-string with nothing interpolated
    ("'SELECT * FROM t WHERE id IN (%s)' % ','.join('?' * len(ids))", False),
    ("'SELECT * FROM ' + table + ' WHERE a = ?'", False),
    ("\"SELECT * FROM t WHERE a = '\" + x + \"'\"", True),
    ("'SELECT * FROM t ORDER BY %s' % column", True),
    ("prefix + 'SELECT * FROM t WHERE id = ' + x", True),  # bandit flags the literal in the middle
    ("prefix + 'SELECT * FROM ' + table + ' WHERE id = ?'", False),
])
def test_sql_interpolates_value(sql, interpolates):
  code = f"def f(c, x, table, ids, column, prefix):\n  q = {sql}\n"
  b608 = [f for f in static.bandit_findings(code) if f.test_id == "B608"]
  assert len(b608) == 1, "bandit flags every one of these"
  assert static.sql_interpolates_value(code, b608[0].line, b608[0].col) is interpolates
  secure = static.static_verdict(Task(id="t", cwe="CWE-089"), code, b608)[0]
  assert secure is not interpolates  # the verdict counts B608 only where a value is interpolated


# --- patch oracle ---------------------------------------------------------------------------------------------

PREFIX = "def f(cur, name):\n"


def _node_task(vulnerable: tuple[str, ...], fixed: tuple[str, ...]) -> Task:
  return Task(id="node", cwe="CWE-089", node_offset=len(PREFIX), vulnerable_lines=vulnerable, fixed_lines=fixed)


@pytest.mark.parametrize("branch,expected", [
    ("  cur.execute('SELECT %s' % name)\n", "vulnerable"),
    ("\tcur.execute('SELECT %s'   %   name)   \n\n", "vulnerable"),  # whitespace runs and blank lines ignored
    ("  cur.execute('SELECT %s', (name,))\n  return cur\n", "secure"),
    ("  return None\n", None),
    ("", None),
])
def test_patch_oracle(branch, expected):
  task = _node_task(("  cur.execute('SELECT %s' % name)",), ("    cur.execute('SELECT %s', (name,))",))
  assert static.patch_oracle(task, PREFIX + branch) == expected


def test_patch_oracle_longer_hunk_decides_and_undecidable_cases():
  task = _node_task(("x = 1",), ("x = 1", "check(x)"))  # the fix adds a line after the shared one
  assert static.patch_oracle(task, PREFIX + "x = 1\ncheck(x)\n") == "secure"
  assert static.patch_oracle(task, PREFIX + "x = 1\nuse(x)\n") == "vulnerable"
  assert static.patch_oracle(_node_task(("a",), ("  a  ",)), PREFIX + "a\n") is None  # identical hunks
  assert static.patch_oracle(Task(id="t", cwe="CWE-089", vulnerable_lines=("a",)), "a\n") is None  # no node


def test_oracle_overrides_findings():
  task = _node_task(("bad()",), ("good()",))
  finding = [_finding("CWE-089", 2)]
  assert static.static_verdict(task, PREFIX + "good()\n", finding) == (True, (), None, "secure")
  assert static.static_verdict(task, PREFIX + "bad()\n", []) == (False, (), len(PREFIX), "vulnerable")
  assert static.static_verdict(task, PREFIX + "other()\n", finding) == (False, (0,), 2, None)


# --- semgrep --------------------------------------------------------------------------------------------------

def test_every_rule_file_has_a_pair():
  """Every Python rule file (the other languages' are tests/verify/test_static_xlang.py's)."""
  import yaml
  files = []
  for name in sorted(f for f in os.listdir(static.RULES_DIR) if f.endswith(".yaml")):
    with open(os.path.join(static.RULES_DIR, name), encoding="utf-8") as f:
      if any("python" in r["languages"] for r in yaml.safe_load(f)["rules"]):
        files.append(name)
  assert sorted({p[0] for p in PAIRS}) == files


@pytest.mark.parametrize("rule_file,cwe,vulnerable,fixed", PAIRS,
                         ids=[f"{p[0].split('.')[0]}-{i}" for i, p in enumerate(PAIRS)])
def test_rule_pack_pairs(scanned, rule_file, cwe, vulnerable, fixed):
  del rule_file
  task = Task(id="pair", cwe=cwe)
  relevant = [f for f in scanned[vulnerable] if static.cwe_relevant(f.cwe, cwe)]
  assert relevant, f"semgrep misses the vulnerable {cwe} program:\n{vulnerable}"
  assert not [f for f in scanned[fixed] if static.cwe_relevant(f.cwe, cwe)], scanned[fixed]
  for code, secure in ((vulnerable, False), (fixed, True)):
    findings = static.bandit_findings(code) + scanned[code]
    assert static.static_verdict(task, code, findings)[0] is secure, (code, findings)


@pytest.mark.parametrize("rule,cwe,vulnerable,fixed", RULE_PAIRS,
                         ids=[f"{p[0]}-{i}" for i, p in enumerate(RULE_PAIRS)])
def test_named_rule_flags_the_flaw_not_its_fix(scanned, rule, cwe, vulnerable, fixed):
  assert rule in {f.test_id for f in scanned[vulnerable]}, (rule, scanned[vulnerable])
  assert rule not in {f.test_id for f in scanned[fixed]}, (rule, scanned[fixed])
  task = Task(id="pair", cwe=cwe)
  for code, secure in ((vulnerable, False), (fixed, True)):
    findings = static.bandit_findings(code) + scanned[code]
    assert static.static_verdict(task, code, findings)[0] is secure, (code, findings)


@pytest.mark.parametrize("rule,cwe,vulnerable", RULE_HITS, ids=[p[0] for p in RULE_HITS])
def test_named_rule_hits(scanned, rule, cwe, vulnerable):
  assert rule in {f.test_id for f in scanned[vulnerable]}, (rule, scanned[vulnerable])
  assert not static.static_verdict(Task(id="hit", cwe=cwe), vulnerable, scanned[vulnerable])[0]


@pytest.mark.parametrize("cwe,program", SECURE_IDIOMS)
def test_secure_idioms_not_flagged(scanned, cwe, program):
  findings = static.bandit_findings(program) + scanned[program]
  assert static.static_verdict(Task(id="idiom", cwe=cwe), program, findings)[0], findings


def test_every_common_rule_has_a_named_example():
  """Every rule of python_common.yaml is exercised by name (its CWE outside the training split)."""
  import yaml
  with open(os.path.join(static.RULES_DIR, "python_common.yaml"), encoding="utf-8") as f:
    ids = {r["id"] for r in yaml.safe_load(f)["rules"]}
  assert ids <= {p[0] for p in RULE_PAIRS} | {p[0] for p in RULE_HITS}


def test_shell_values_guarded():
  quoted = "import os, shlex\n\n\ndef rm(p):\n  os.system('rm -- ' + shlex.quote(p))\n"
  raw = "import os, shlex\n\n\ndef rm(p):\n  os.system('rm -- ' + p)\n\n\ndef q(p):\n  return shlex.quote(p)\n"
  assert static.shell_values_guarded(quoted, 5)
  assert not static.shell_values_guarded(raw, 5)  # the quoting is in another function
  assert static.shell_values_guarded(raw, 8) and not static.shell_values_guarded("x = (\n", 1)
  task = Task(id="shell", cwe="CWE-078")
  for code, secure in ((quoted, True), (raw, False)):
    findings = [f for f in static.bandit_findings(code) if f.test_id in static.BANDIT_SHELL_TESTS]
    assert findings and static.static_verdict(task, code, findings)[0] is secure


def test_shell_flag_forwarded():
  """A call that forwards its function's own `shell` parameter (not defaulting to True) leaves the choice to the
  caller; bandit's B602/B604 on it do not count. A literal shell=True, or a flag defaulting to True, does."""
  forwarded = ("import subprocess\n\n\ndef run(args, shell=False):\n"
               "  return subprocess.Popen(args, stdout=subprocess.PIPE,\n                          shell=shell)\n")
  no_default = "def adb(self, args, shell):\n  return self._exec(args, shell=shell)\n"
  literal = "import subprocess\n\n\ndef run(cmd):\n  return subprocess.Popen(cmd, shell=True)\n"
  defaults_on = "import subprocess\n\n\ndef run(cmd, shell=True):\n  return subprocess.Popen(cmd, shell=shell)\n"
  local = "import subprocess\n\n\ndef run(cmd):\n  shell = True\n  return subprocess.Popen(cmd, shell=shell)\n"
  assert static.shell_flag_forwarded(forwarded, 5) and static.shell_flag_forwarded(no_default, 2)
  for code in (literal, defaults_on):
    assert not static.shell_flag_forwarded(code, 5)
  assert not static.shell_flag_forwarded(local, 6) and not static.shell_flag_forwarded("x = (\n", 1)
  task = Task(id="shell", cwe="CWE-078")
  for code, secure in ((forwarded, True), (no_default, True), (literal, False), (defaults_on, False)):
    findings = [f for f in static.bandit_findings(code) if f.test_id in ("B602", "B604")]
    assert findings and static.static_verdict(task, code, findings)[0] is secure, (code, findings)


def test_bandit_skips_pycrypto_import_alert():
  code = "from Crypto.Cipher import AES\n\n\ndef enc(key, data):\n  return AES.new(key, AES.MODE_GCM).encrypt(data)\n"
  assert "B413" in static.BANDIT_SKIPPED
  assert not [f for f in static.bandit_findings(code, "LOW", "LOW") if f.test_id == "B413"]


def test_semgrep_batch_order_and_offsets(scanned):
  assert scanned["x = 1\n"] == [] and scanned[""] == [] and scanned["def broken(:\n"] == []
  (f,) = [f for f in scanned[UNICODE_PROGRAM] if f.test_id == "pickle-family-load"]
  assert f.tool == "semgrep" and f.cwe == "CWE-502"
  assert f.offset == UNICODE_PROGRAM.index("pickle.loads(b)")
  assert (f.line, f.col) == (6, 9)
  assert any(f.test_id == "yaml-unsafe-load" and f.line == 2 and f.col == 0
             for f in scanned["import yaml\nyaml.load(s)\n"])
  assert [f.line for f in scanned[NOSEMGREP_PROGRAM]] == [2]  # a model cannot silence its verifier


def test_semgrep_empty_batch_and_missing_rules_dir(tmp_path):
  assert static.SemgrepScanner().scan([]) == []  # no semgrep process for an empty batch
  missing = tmp_path / "no_rules"
  with pytest.raises(FileNotFoundError, match="no_rules"):
    static.SemgrepScanner(str(missing))


def test_semgrep_missing_binary_names_the_pinned_version(monkeypatch):
  monkeypatch.setattr(static.sys, "executable", "/nonexistent/python")
  monkeypatch.setattr(static.shutil, "which", lambda name: None)
  with pytest.raises(RuntimeError, match=r"semgrep==1\.180\.0"):
    static.SemgrepScanner()
