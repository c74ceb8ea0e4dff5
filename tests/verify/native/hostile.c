/* Hostile native program for tests/verify/test_sandbox.py: argv = <outside tmp> <outside home> <token> <mode>
 * [args]. Each mode tries one thing a judged program must not do and prints what happened ("blocked ..." or
 * "ALLOWED ..."); the test reads the lines. Written for the tests, never run outside the sandbox. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, int failed) {
  printf("%s %s (errno %d)\n", failed ? "blocked" : "ALLOWED", what, failed ? errno : 0);
  fflush(stdout);
}

static int try_open(const char *path, int flags) {
  int fd = open(path, flags, 0644);
  if (fd >= 0) close(fd);
  return fd < 0;
}

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  const char *tmp = argv[1], *home = argv[2], *mode = argv[4];
  char path[4096];
  if (!strcmp(mode, "files")) {  /* write, truncate, delete outside the sandbox */
    snprintf(path, sizeof path, "%s/secret.txt", tmp);
    report("truncate outside tmp", try_open(path, O_WRONLY | O_TRUNC));
    snprintf(path, sizeof path, "%s/secret.txt", home);
    report("unlink outside home", unlink(path) != 0);
    snprintf(path, sizeof path, "%s/new.txt", tmp);
    report("create outside tmp", try_open(path, O_WRONLY | O_CREAT));
    report("write /etc", try_open("/etc/tsp_sandbox_probe", O_WRONLY | O_CREAT));
  } else if (!strcmp(mode, "ptrace")) {  /* attach to the parent, to pid 1 and to a host pid given in argv[5] */
    report("ptrace parent", ptrace(PTRACE_ATTACH, getppid(), 0, 0) != 0);
    report("ptrace pid 1", ptrace(PTRACE_ATTACH, 1, 0, 0) != 0);
    report("ptrace host", ptrace(PTRACE_ATTACH, atoi(argv[5]), 0, 0) != 0);
  } else if (!strcmp(mode, "proc")) {  /* another process's environment and memory */
    snprintf(path, sizeof path, "/proc/%s/environ", argv[5]);
    report("read host environ", try_open(path, O_RDONLY));
    snprintf(path, sizeof path, "/proc/%s/mem", argv[5]);
    report("open host mem", try_open(path, O_RDONLY));
  } else if (!strcmp(mode, "net")) {  /* TCP to the host's loopback listener (port argv[5]), raw and UDP sockets */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[5]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    report("tcp connect loopback", s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0);
    int r = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    report("raw socket send", r < 0 || sendto(r, "x", 1, 0, (struct sockaddr *)&a, sizeof a) < 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    report("udp send loopback", u < 0 || sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof a) < 0);
  } else if (!strcmp(mode, "signals")) {  /* the parent, a host pid (argv[5]) and everyone */
    report("kill parent", kill(getppid(), SIGKILL) != 0);
    report("kill host", kill(atoi(argv[5]), SIGTERM) != 0);
    kill(-1, SIGKILL);  /* reaches at most the program's own processes, itself included */
    printf("survived kill(-1)\n");
  } else if (!strcmp(mode, "privileges")) {  /* setuid binaries cannot raise it; no new privileges */
    printf("no_new_privs %d uid %d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), (int)getuid());
    report("setuid(0)", getuid() == 0 || setuid(0) != 0);
    fflush(stdout);
    execl("/bin/su", "su", "-c", "id -u", "root", (char *)NULL);  /* without privileges: fails or asks */
    printf("no su\n");
  } else if (!strcmp(mode, "shm")) {  /* a file in /dev/shm named argv[5] must not reach the host's */
    snprintf(path, sizeof path, "/dev/shm/%s", argv[5]);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    printf("shm %s\n", fd >= 0 ? "written" : "refused");
  } else if (!strcmp(mode, "daemon")) {  /* a detached grandchild that sleeps past the run */
    if (fork() == 0) {
      setsid();
      if (fork() == 0) {
        char *args[] = {argv[0], argv[1], argv[2], argv[3], "sleep", NULL};
        execv(argv[0], args);
      }
      _exit(0);
    }
    wait(NULL);
    printf("detached\n");
  } else if (!strcmp(mode, "sleep")) {
    sleep(60);
  } else if (!strcmp(mode, "forkbomb")) {
    for (;;) fork();
  } else if (!strcmp(mode, "loop")) {
    for (volatile unsigned long i = 0;; i++) {}
  } else if (!strcmp(mode, "alloc")) {  /* 8 GiB, touched */
    size_t n = (size_t)8 << 30;
    char *p = malloc(n);
    printf("malloc %s\n", p ? "ok" : "refused");
    if (p) memset(p, 1, n);
  }
  return 0;
}
