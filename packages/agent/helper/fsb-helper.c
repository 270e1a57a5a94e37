/*
 * fsb-helper: process 1 of every sandbox, injected by the agent at /.fast-sandbox/helper.
 *
 * It starts the user's command as its child and then does what an init process must:
 *  - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command;
 *  - reaps every orphan re-parented to it, so no zombies pile up;
 *  - records the command's exit status in /.fast-sandbox/run/exit-code (written atomically);
 *  - keeps the sandbox alive after the command exits, so `exec` still works, until it is told
 *    to stop (SIGTERM/SIGINT), and then exits with the command's status.
 * It writes nothing to stdout and only its own failures to stderr: the sandbox's log is the user's.
 *
 * `fsb-helper --pause` runs no command: it only waits for SIGTERM/SIGINT (and reaps). The agent
 * runs it as a tiny "anchor" container that keeps its sandboxes' shared shim process alive.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUN_DIR "/.fast-sandbox/run"

static int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

static void record_exit(int code) {
  char text[16];
  int length = snprintf(text, sizeof text, "%d\n", code);
  int fd = open(RUN_DIR "/exit-code.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return; /* no run directory mounted: nothing to record */
  if (write(fd, text, (size_t)length) == length && fsync(fd) == 0) {
    close(fd);
    rename(RUN_DIR "/exit-code.tmp", RUN_DIR "/exit-code");
    return;
  }
  close(fd);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "fast-sandbox helper: no command to run\n");
    return 2;
  }
  sigset_t handled, original;
  sigemptyset(&handled);
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaddset(&handled, forwarded[i]);
  sigaddset(&handled, SIGCHLD);
  sigprocmask(SIG_BLOCK, &handled, &original);

  if (strcmp(argv[1], "--pause") == 0) {
    for (;;) {
      siginfo_t info;
      int sig = sigwaitinfo(&handled, &info);
      if (sig == SIGTERM || sig == SIGINT) return 0;
      if (sig == SIGCHLD) while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
  }

  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "fast-sandbox helper: fork: %s\n", strerror(errno));
    return 1;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &original, NULL);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "fast-sandbox: cannot run %s: %s\n", argv[1], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }

  int child_running = 1;
  int child_code = 0;
  int stopping = 0;
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&handled, &info);
    if (sig < 0) continue; /* EINTR */
    if (sig == SIGCHLD) {
      int status;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == child) {
          child_running = 0;
          child_code = exit_code_of(status);
          record_exit(child_code);
        }
      }
      if (!child_running && stopping) return child_code;
      continue;
    }
    if (child_running) {
      kill(child, sig);
      if (sig == SIGTERM || sig == SIGINT) stopping = 1;
    } else if (sig == SIGTERM || sig == SIGINT) {
      return child_code;
    }
  }
}
