/*
 * fsb-helper: process 1 of every sandbox, injected by the agent at /.fast-sandbox/helper.
 *
 * It starts the user's command as its child and then does what an init process must:
 *  - reports whether the command started (/.fast-sandbox/run/command-start, see below), so the
 *    agent fails the create of a sandbox whose command cannot run;
 *  - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command;
 *  - reaps every orphan re-parented to it, so no zombies pile up;
 *  - records the command's exit status in /.fast-sandbox/run/exit-code (written atomically);
 *  - keeps the sandbox alive after the command exits, so `exec` still works, until it is told
 *    to stop (SIGTERM/SIGINT), and then exits with the command's status.
 * It writes nothing to stdout and only its own failures to stderr: the sandbox's log is the user's.
 *
 * Usage: `fsb-helper [--workdir DIR] [--user NAME[:GROUP]] [--envd PATH] -- COMMAND [ARG...]` (also `fsb-helper COMMAND [ARG...]`, as
 * sandboxes created by older agents run it). The child creates DIR when missing (as root, as runc
 * and runsc do for a process's cwd), becomes the user (`--user`), enters DIR as that user (as runc
 * does: a user is never started in a directory it cannot enter) and executes COMMAND, searching
 * the sandbox's $PATH like execvp. Until that exec succeeds, a close-on-exec pipe stays open between child and helper: a
 * successful exec closes it; a failure writes `failed <step> <errno>\n<path>` into it (step: fork,
 * mkdir, user, chdir or exec; path: the directory or file concerned, empty when no file of that name is
 * in $PATH). The helper then writes `started\n` or that line to run/command-start (atomically).
 *
 * `fsb-helper --pause` runs no command: it only waits for SIGTERM/SIGINT (and reaps). The agent
 * runs it as a tiny "anchor" container that keeps its sandboxes' shared shim process alive.
 *
 * `fsb-helper --prepared [--user NAME[:GROUP]] [--envd PATH]` is process 1 of a prepared instance (a sandbox made before
 * anyone asked for it): it opens the FIFO run/claim (which the agent made), writes `waiting` to
 * run/prepared and waits, doing nothing, until the agent writes the claim into the FIFO, then runs
 * it as above. The claim is a sequence of NUL-terminated strings: `fsb-claim-v1`, the working
 * directory, the number of arguments and the arguments, the number of environment entries and the
 * entries (`NAME=value`, the whole environment: the image's is not kept). The helper reads until
 * the claim is whole by its own counts (it holds the FIFO open for writing too, so it never sees
 * an end of file), then removes the FIFO before the command starts; a claim that is malformed, or
 * cut short (the rest not there within 30 s of its first bytes; FSB_CLAIM_REST_TIMEOUT_MS changes
 * it for tests that run the helper outside a sandbox, and only there: as process 1, its
 * environment is the image's), makes it exit with status 2. Signals sent meanwhile wait, blocked,
 * until the command runs (process 1 would drop them otherwise); SIGKILL, which removes an unclaimed
 * instance, cannot wait.
 *
 * `--user NAME[:GROUP]` (before `--`) runs the command as the image's user, named: the child takes
 * its uid, groups and home from the image's /etc/passwd and /etc/group before the exec (a failure is
 * reported as the step `user`, errno ENOENT for an unknown name, EINVAL for a uid or gid above
 * 2147483647, as runc refuses them), while process 1 and the daemon stay root; the daemon acts as
 * that user too (with GROUP) for requests that name none.
 *
 * `fsb-helper --exec-as NAME[:GROUP] -- COMMAND [ARG...]` is no process 1: the agent runs it as an
 * exec (`fsb exec`) in a sandbox whose image names its USER, so the exec runs as that user like the
 * command does (as `docker exec` would). It becomes the user as `--user` below and executes COMMAND
 * in its place; a failure is written to stderr, exit status 127 (not found) or 126, as a shell's.
 *
 * `fsb-helper --sethostname NAME` is no process 1 either: the agent runs it as an exec, as root with
 * CAP_SYS_ADMIN, to give a sandbox restored from a gVisor checkpoint (a copy) its own hostname when
 * no in-sandbox daemon does it. It calls sethostname(2) and exits 0, or 1 with the reason on stderr.
 * It exists so that this privileged exec is never a program found through the sandbox's $PATH,
 * which the sandbox's own code may have replaced.
 *
 * `--envd PATH` (before `--`, with or without `--workdir`) also runs the in-sandbox daemon
 * (packages/envd, E2B's envd interface on port 49983) as a second, supervised child: started
 * once the command's start is recorded, restarted when it dies or could not be forked (a full pids
 * limit; after 0.1 s, doubling up to 5 s, back to 0.1 s once it ran 10 s), left dead when it cannot
 * be executed at all (status 127), and stopped with the sandbox. Its exits are reaped like orphans and never recorded as the command's.
 * It gets the sandbox's environment without any FSB_ENVD_* variable but those the helper sets (the
 * image's user and group, FSB_ENVD_DEFAULT_USER and FSB_ENVD_DEFAULT_GROUP): the image's ENV and
 * the create's env are the sandbox's to choose, and must not switch off the daemon's protections.
 * The agent passes it only to sandboxes with a network of their own (the port would collide in a
 * shared one). DAEMON_RESUME_SIGNAL (SIGWINCH) to the helper becomes SIGUSR2 to the daemon ("resume
 * serving", after a gVisor restore; see packages/envd/internal/quiesce), never the command's: the
 * agent's containerd cannot send a real-time signal through runsc, whose `kill` takes only named
 * ones, and SIGWINCH is one process 1 never needs otherwise (and ignores by default, so an older
 * helper is unharmed). The helper announces it by writing the signal's number to
 * run/daemon-resume-signal when it starts the daemon; the agent sends it only then.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#define RUN_DIR "/.fast-sandbox/run"

static int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

/* Writes `length` bytes to RUN_DIR/name through a temporary file and a rename, so a reader sees all or nothing. */
static void record(const char *name, const char *text, size_t length, int durable) {
  char path[64], temporary[64];
  snprintf(path, sizeof path, RUN_DIR "/%s", name);
  snprintf(temporary, sizeof temporary, RUN_DIR "/%s.tmp", name);
  int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return; /* no run directory mounted: nothing to record */
  int ok = write(fd, text, length) == (ssize_t)length && (!durable || fsync(fd) == 0);
  close(fd);
  if (ok) rename(temporary, path);
}

static void record_exit(int code) {
  char text[16];
  int length = snprintf(text, sizeof text, "%d\n", code);
  record("exit-code", text, (size_t)length, 1);
}

/* In the child: tells the helper which step failed (errno is that step's), then exits like a shell would. */
static void report_failure(int pipe_fd, const char *step, const char *path) {
  int error = errno;
  char text[64 + PATH_MAX];
  int length = snprintf(text, sizeof text, "failed %s %d\n%s", step, error, path);
  if (length > (int)sizeof text - 1) length = (int)sizeof text - 1;
  if (write(pipe_fd, text, (size_t)length) < 0) { /* the helper reads EOF: reported as started */ }
  int exec_step = strcmp(step, "exec") == 0;
  if (!exec_step && strcmp(step, "user") == 0 && error == ENOENT) {
    /* As docker exec -u words it; 126 (the command was found, it cannot be run so), not 127. */
    fprintf(stderr, "fast-sandbox: cannot run the command: unable to find user %s: no matching entries in /etc/passwd or /etc/group\n", path);
  } else if (*path) {
    fprintf(stderr, "fast-sandbox: cannot run the command: %s %s: %s\n", step, path, strerror(error));
  } else {
    fprintf(stderr, "fast-sandbox: cannot run the command: executable file not found in $PATH\n");
  }
  /* 127 only for a command that is not there, as a shell; anything else that stops it is 126. */
  _exit(exec_step && error == ENOENT ? 127 : 126);
}

static int all_digits(const char *text) {
  if (!*text) return 0;
  for (; *text; text++) {
    if (*text < '0' || *text > '9') return 0;
  }
  return 1;
}

/* Splits a line of /etc/passwd or /etc/group at ':' in place; returns how many fields it has (at most max). */
static int split_fields(char *line, char **fields, int max) {
  line[strcspn(line, "\r\n")] = '\0';
  int count = 0;
  for (char *field = line; count < max; count++) {
    fields[count] = field;
    char *colon = strchr(field, ':');
    if (!colon) return count + 1;
    *colon = '\0';
    field = colon + 1;
  }
  return count;
}

/* Whether the comma-separated member list of a /etc/group line names `user`. */
static int is_member(char *members, const char *user) {
  for (char *member = strtok(members, ","); member; member = strtok(NULL, ",")) {
    if (strcmp(member, user) == 0) return 1;
  }
  return 0;
}

#define MAX_GROUPS 64
/* The largest uid or gid taken, as runc's (libcontainer/user: 32-bit systems' int); one above is refused, never truncated. */
#define MAX_ID INT32_MAX

/* Parses a uid or gid written in decimal digits only (no sign, no blanks); -1 when out of range. */
static long parse_id(const char *text) {
  if (!all_digits(text)) return -1;
  errno = 0;
  char *end;
  unsigned long id = strtoul(text, &end, 10);
  if (errno || *end || id > MAX_ID) return -1;
  return (long)id;
}

/*
 * Becomes the image's user `NAME[:GROUP]` (`--user`, for an image whose USER names an account): its
 * uid and home from the image's /etc/passwd; with GROUP (from /etc/group; a number is taken as it
 * is), that group alone, else the primary group of /etc/passwd and the user's groups of /etc/group
 * — as runc and Docker read a USER (libcontainer's GetExecUser gives supplementary groups only to
 * the implicit form) — then setgroups, setgid and setuid, so the command runs as the image says
 * while process 1 (and the daemon) stay root. HOME becomes the user's when it was the runtime's
 * root default. On failure sets `failed` (errno ENOENT: no such user or group; EINVAL: a uid or gid
 * it would use is above MAX_ID, which a cast to uid_t would otherwise wrap, 4294967296 becoming root).
 */
static int become_user(const char *spec, const char **failed_step, const char **failed_path) {
  static char text[256];
  *failed_step = "user";
  *failed_path = spec;
  snprintf(text, sizeof text, "%s", spec);
  char *group = strchr(text, ':');
  if (group) *group++ = '\0';
  if (group && !*group) group = NULL; /* `NAME:` names no group */
  const char *name = text;
  long uid = -1, gid = 0;
  static char user_name[256], home[PATH_MAX];
  user_name[0] = home[0] = '\0';
  /* getline: a line of any length is read whole (a long member list must not be split into two). */
  char *line = NULL;
  size_t capacity = 0;
  char *fields[7];
  FILE *passwd = fopen("/etc/passwd", "re");
  while (passwd && getline(&line, &capacity, passwd) >= 0) {
    if (split_fields(line, fields, 7) < 6 || !all_digits(fields[2]) || !all_digits(fields[3])) continue;
    if (strcmp(fields[0], name) == 0 || (all_digits(name) && strcmp(fields[2], name) == 0)) {
      uid = parse_id(fields[2]);
      gid = parse_id(fields[3]);
      if (uid < 0 || gid < 0) {
        free(line);
        if (passwd) fclose(passwd);
        errno = EINVAL;
        return -1;
      }
      snprintf(user_name, sizeof user_name, "%s", fields[0]);
      snprintf(home, sizeof home, "%s", fields[5]);
      break;
    }
  }
  if (passwd) fclose(passwd);
  if (uid < 0) {
    if (!all_digits(name)) {
      free(line);
      errno = ENOENT;
      return -1;
    }
    uid = parse_id(name);
    if (uid < 0) {
      free(line);
      errno = EINVAL;
      return -1;
    }
  }
  gid_t groups[MAX_GROUPS];
  size_t count = 0;
  long named_gid = -1;
  int out_of_range = 0; /* a group the user would get has a gid above MAX_ID */
  if (group && all_digits(group) && (named_gid = parse_id(group)) < 0) out_of_range = 1;
  FILE *groups_file = fopen("/etc/group", "re");
  while (!out_of_range && groups_file && getline(&line, &capacity, groups_file) >= 0) {
    int found = split_fields(line, fields, 4);
    if (found < 3 || !all_digits(fields[2])) continue;
    if (group && named_gid < 0 && strcmp(fields[0], group) == 0) {
      if ((named_gid = parse_id(fields[2])) < 0) out_of_range = 1;
    }
    if (!group && found == 4 && user_name[0] && count < MAX_GROUPS - 1 && is_member(fields[3], user_name)) {
      long member_gid = parse_id(fields[2]);
      if (member_gid < 0) out_of_range = 1;
      else groups[count++] = (gid_t)member_gid;
    }
  }
  if (groups_file) fclose(groups_file);
  free(line);
  if (out_of_range) {
    errno = EINVAL;
    return -1;
  }
  if (group) {
    if (named_gid < 0) {
      errno = ENOENT;
      return -1;
    }
    gid = named_gid;
  }
  groups[count++] = (gid_t)gid;
  if (setgroups(count, groups) < 0 || setgid((gid_t)gid) < 0 || setuid((uid_t)uid) < 0) return -1;
  const char *current = getenv("HOME");
  if (home[0] && (!current || strcmp(current, "/root") == 0)) setenv("HOME", home, 1);
  return 0;
}

/*
 * Creates dir and its missing parents (mode 0755, owned by whoever calls: the child does it while
 * still root) when it does not exist; on failure sets `failed` and errno. Does not enter it: the
 * child enters it once it is the command's user (enter_directory), as runc does, so a user is never
 * started in a directory it could not enter itself. Anything but a missing directory is left for
 * that chdir to report.
 */
static int make_directory(char *dir, const char **failed_step, const char **failed_path) {
  *failed_step = "mkdir";
  *failed_path = dir;
  if (!*dir) {
    errno = ENOENT;
    return -1;
  }
  struct stat status;
  if (stat(dir, &status) == 0 || errno != ENOENT) return 0;
  for (char *slash = strchr(dir + 1, '/');; slash = strchr(slash + 1, '/')) {
    if (slash) *slash = '\0';
    int made = mkdir(dir, 0755) == 0 || errno == EEXIST;
    if (slash) *slash = '/';
    if (!made) {
      if (slash) *slash = '\0'; /* report the component that could not be made */
      return -1;
    }
    if (!slash || slash[1] == '\0') break;
  }
  return 0;
}

/* Enters dir (as the command's user: after become_user); on failure sets `failed` and errno. */
static int enter_directory(const char *dir, const char **failed_step, const char **failed_path) {
  *failed_step = "chdir";
  *failed_path = dir;
  return chdir(dir);
}

/* execve, and for a file the kernel cannot execute (no #! line) the shell, as execvp does. */
static void execute(const char *file, char **argv) {
  extern char **environ;
  execve(file, argv, environ);
  if (errno != ENOEXEC) return;
  int count = 0;
  while (argv[count]) count++;
  char *script[count + 2];
  script[0] = "/bin/sh";
  script[1] = (char *)file;
  for (int i = 1; i <= count; i++) script[i + 1] = argv[i];
  execve("/bin/sh", script, environ);
  errno = ENOEXEC;
}

/*
 * Runs argv like execvp (a name without '/' is searched in the sandbox's $PATH, an empty entry being
 * the working directory; a file that is there but not executable is skipped unless nothing better
 * is found). Returns only on failure: errno, and the file concerned ("" when no file was found).
 */
static const char *run_command(char **argv) {
  static char candidate[PATH_MAX], denied[PATH_MAX];
  const char *name = argv[0];
  if (strchr(name, '/')) {
    execute(name, argv);
    return name;
  }
  const char *search = getenv("PATH");
  if (!search) search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  int saw_denied = 0;
  for (const char *entry = search;; entry++) {
    const char *end = strchrnul(entry, ':');
    size_t length = (size_t)(end - entry);
    if (length == 0) length = 1, entry = "."; /* an empty entry: the working directory */
    if (length + strlen(name) + 2 <= sizeof candidate && *name) {
      memcpy(candidate, entry, length);
      candidate[length] = '/';
      strcpy(candidate + length + 1, name);
      execute(candidate, argv);
      int error = errno;
      if (error == EACCES) {
        if (!saw_denied) strcpy(denied, candidate);
        saw_denied = 1;
      } else if (error == ENOENT || error == ENOTDIR || error == ENAMETOOLONG) {
        /* A file that exists but cannot be found by the kernel: its interpreter or loader is missing. */
        if (error == ENOENT && access(candidate, F_OK) == 0) return candidate;
      } else {
        return candidate;
      }
    }
    if (*end == '\0') break;
    entry = end;
  }
  if (saw_denied) {
    errno = EACCES;
    return denied;
  }
  errno = ENOENT;
  return "";
}

/* The in-sandbox daemon's exec failed (or it exited so): restarting it would fail the same way. */
#define ENVD_CANNOT_RUN 127
#define ENVD_MIN_BACKOFF_MS 100
#define ENVD_MAX_BACKOFF_MS 5000
#define ENVD_STABLE_MS 10000
/* The agent sends the number it reads from run/daemon-resume-signal. */
#define DAEMON_RESUME_SIGNAL SIGWINCH

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*
 * The daemon's environment: the sandbox's (what its processes start from), without any FSB_ENVD_*
 * variable — the image's ENV and the create's env would otherwise set how the daemon listens, whom
 * it serves and as whom it acts (FSB_ENVD_LISTEN, FSB_ENVD_SERVE_INSIDE_CALLERS,
 * FSB_ENVD_DEFAULT_USER…) — but the helper's own: `--user NAME[:GROUP]` as the default user and
 * group. NULL when memory is short.
 */
static char **envd_environment(const char *user) {
  extern char **environ;
  size_t count = 0;
  while (environ[count]) count++;
  char **list = calloc(count + 3, sizeof *list);
  if (!list) return NULL;
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    if (strncmp(environ[i], "FSB_ENVD_", 9) != 0) list[at++] = environ[i];
  }
  if (user) {
    const char *colon = strchr(user, ':');
    int length = colon ? (int)(colon - user) : (int)strlen(user);
    if (asprintf(&list[at++], "FSB_ENVD_DEFAULT_USER=%.*s", length, user) < 0) return NULL;
    if (colon && colon[1] && asprintf(&list[at++], "FSB_ENVD_DEFAULT_GROUP=%s", colon + 1) < 0) return NULL;
  }
  return list;
}

/* When to start the daemon again (it died, or could not be forked): after the back-off, which doubles for the next time. */
static long long envd_retry_ms(int *backoff_ms) {
  long long at = now_ms() + *backoff_ms;
  *backoff_ms = *backoff_ms * 2 > ENVD_MAX_BACKOFF_MS ? ENVD_MAX_BACKOFF_MS : *backoff_ms * 2;
  return at;
}

/*
 * Starts the daemon: stdin from /dev/null, stdout and stderr the sandbox's log (it writes only its
 * failures). -1 when it cannot fork (a full pids limit): the caller retries after the back-off.
 */
static pid_t start_envd(const char *path, char **environment, const sigset_t *original) {
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "fast-sandbox helper: cannot fork the in-sandbox daemon: %s\n", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, original, NULL);
    setsid(); /* not in the command's process group: signals for the command never reach it */
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
      dup2(null, 0);
      if (null > 0) close(null);
    }
    char *const daemon_argv[] = {(char *)path, NULL};
    execve(path, daemon_argv, environment);
    fprintf(stderr, "fast-sandbox: cannot start the in-sandbox daemon %s: %s\n", path, strerror(errno));
    _exit(ENVD_CANNOT_RUN);
  }
  return pid;
}

#define CLAIM_MAX (4 << 20)
/* How long the rest of a claim begun may take; FSB_CLAIM_REST_TIMEOUT_MS overrides it (tests, not process 1). */
#define CLAIM_REST_TIMEOUT_MS 30000

/* Next NUL-terminated string of the claim at *at, or NULL past its end. */
static char *claim_string(char *buffer, size_t length, size_t *at) {
  if (*at >= length) return NULL;
  char *start = buffer + *at;
  char *end = memchr(start, '\0', length - *at);
  if (!end) return NULL;
  *at = (size_t)(end - buffer) + 1;
  return start;
}

static long claim_count(char *buffer, size_t length, size_t *at) {
  char *text = claim_string(buffer, length, at);
  if (!text || !*text) return -1;
  char *end;
  long count = strtol(text, &end, 10);
  return *end || count < 0 || count > 100000 ? -1 : count;
}

/*
 * Whether the claim in buffer is whole: 1 when every string its counts announce is there, or when
 * it can never become valid (read_claim then refuses it); 0 while more is to come.
 */
static int claim_whole(char *buffer, size_t length) {
  size_t at = 0;
  char *magic = claim_string(buffer, length, &at);
  if (!magic) return 0;
  if (strcmp(magic, "fsb-claim-v1") != 0) return 1;
  if (!claim_string(buffer, length, &at)) return 0; /* the working directory */
  for (int list = 0; list < 2; list++) {            /* the arguments, then the environment */
    size_t count_at = at;
    if (!claim_string(buffer, length, &count_at)) return 0;
    long count = claim_count(buffer, length, &at);
    if (count < 0) return 1;
    for (long i = 0; i < count; i++) {
      if (!claim_string(buffer, length, &at)) return 0;
    }
  }
  return 1;
}

/*
 * Waits for the claim (see above), then sets the environment it names and returns its argv
 * (NULL-terminated), with its working directory in *workdir; NULL when the claim is unusable.
 */
static char **read_claim(char **workdir) {
  /*
   * The FIFO is open before the instance is reported waiting: the agent opens it without blocking
   * and takes a FIFO without a reader (ENXIO) for a dead instance. Opened for reading and writing,
   * which never waits for a writer — under gVisor too, whose open of a host FIFO (runsc
   * --host-fifo=open) waits for one even when asked not to block — and then polled. The end of the
   * claim is told by its counts (claim_whole), not by an end of file, which this open never sees.
   */
  int fd;
  do fd = open(RUN_DIR "/claim", O_RDWR | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    fprintf(stderr, "fast-sandbox helper: cannot open the claim: %s\n", strerror(errno));
    return NULL;
  }
  record("prepared", "waiting\n", 8, 0); /* the agent hands the instance out once it waits */
  int rest_timeout_ms = CLAIM_REST_TIMEOUT_MS;
  /* Only outside a sandbox (tests): process 1's environment is the image's, which has no say in it. */
  const char *timeout_setting = getpid() != 1 ? getenv("FSB_CLAIM_REST_TIMEOUT_MS") : NULL;
  if (timeout_setting && atoi(timeout_setting) > 0) rest_timeout_ms = atoi(timeout_setting);
  struct pollfd claim_ready = {.fd = fd, .events = POLLIN};
  while (poll(&claim_ready, 1, -1) < 0 && errno == EINTR) {}
  char *buffer = malloc(CLAIM_MAX);
  size_t length = 0;
  for (;;) {
    if (!buffer || length == CLAIM_MAX) break;
    if (length > 0) {
      /* The rest of a claim begun follows at once; one cut short (its writer died) is refused. */
      int ready;
      while ((ready = poll(&claim_ready, 1, rest_timeout_ms)) < 0 && errno == EINTR) {}
      if (ready <= 0) break; /* overdue, or poll failed: either way no whole claim */
    }
    ssize_t got = read(fd, buffer + length, CLAIM_MAX - length);
    if (got > 0) {
      length += (size_t)got;
      /* Every whole claim ends with a NUL: only then can it be whole. */
      if (buffer[length - 1] == '\0' && claim_whole(buffer, length)) break;
    } else if (got < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  close(fd);
  /* The FIFO has served: it goes before the command starts, so the command never finds it. */
  unlink(RUN_DIR "/claim");
  size_t at = 0;
  char *magic = buffer ? claim_string(buffer, length, &at) : NULL;
  if (!magic || strcmp(magic, "fsb-claim-v1") != 0) return NULL;
  *workdir = claim_string(buffer, length, &at);
  long argc = claim_count(buffer, length, &at);
  if (!*workdir || argc < 1) return NULL;
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  for (long i = 0; argv && i < argc; i++) {
    if (!(argv[i] = claim_string(buffer, length, &at))) return NULL;
  }
  long envc = claim_count(buffer, length, &at);
  if (!argv || envc < 0) return NULL;
  /*
   * HOME: the runtime (runc, runsc) adds the user's from /etc/passwd to process 1's env when the
   * spec has none, as it does for a cold create's command; the claim carries only the image's and
   * the request's env, so the runtime's HOME stays unless the claim sets its own.
   */
  const char *runtime_home = getenv("HOME");
  char *home = runtime_home ? strdup(runtime_home) : NULL;
  clearenv();
  for (long i = 0; i < envc; i++) {
    char *entry = claim_string(buffer, length, &at);
    if (!entry || !strchr(entry, '=')) return NULL;
    putenv(entry);
  }
  if (home && !getenv("HOME")) setenv("HOME", home, 1);
  free(home);
  return argv;
}

/* `--exec-as`: becomes the user, then executes argv in this process; returns only on failure. */
static int exec_as(const char *user, char **argv) {
  const char *step, *path;
  if (!argv[0]) {
    fprintf(stderr, "fast-sandbox helper: --exec-as: no command to run\n");
    return 2;
  }
  if (become_user(user, &step, &path) < 0) report_failure(-1, step, path);
  path = run_command(argv);
  report_failure(-1, "exec", path);
  return 126;
}

/* `--sethostname NAME`: the hostname of the sandbox's UTS namespace. */
static int set_hostname(int argc, char **argv) {
  if (argc != 3 || !argv[2][0]) {
    fprintf(stderr, "fast-sandbox helper: usage: --sethostname NAME\n");
    return 1;
  }
  if (sethostname(argv[2], strlen(argv[2])) < 0) {
    fprintf(stderr, "fast-sandbox helper: sethostname %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--sethostname") == 0) return set_hostname(argc, argv);
  if (argc > 2 && strcmp(argv[1], "--exec-as") == 0) {
    int first = 3;
    if (first < argc && strcmp(argv[first], "--") == 0) first++;
    return exec_as(argv[2], argv + first);
  }
  char *workdir = NULL;
  char *envd = NULL;
  char *user = NULL;
  int prepared = 0;
  int first = 1;
  for (;;) {
    if (first < argc && strcmp(argv[first], "--prepared") == 0) {
      prepared = 1;
      first += 1;
    } else if (first + 1 < argc && strcmp(argv[first], "--workdir") == 0) {
      workdir = argv[first + 1];
      first += 2;
    } else if (first + 1 < argc && strcmp(argv[first], "--envd") == 0) {
      envd = argv[first + 1];
      first += 2;
    } else if (first + 1 < argc && strcmp(argv[first], "--user") == 0) {
      user = argv[first + 1];
      first += 2;
    } else {
      break;
    }
  }
  if (first < argc && strcmp(argv[first], "--") == 0) first++;
  /*
   * Blocked from the start, before the claim is read and the command started: process 1 drops a
   * signal it has no handler for, but a blocked one waits, queued, for the loop below — a SIGTERM
   * that stops the sandbox right after its claim must reach the command. The children restore the
   * original mask before they exec.
   */
  sigset_t handled, original;
  sigemptyset(&handled);
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaddset(&handled, forwarded[i]);
  sigaddset(&handled, SIGCHLD);
  int resume_signal = envd != NULL;
  if (resume_signal) sigaddset(&handled, DAEMON_RESUME_SIGNAL);
  sigprocmask(SIG_BLOCK, &handled, &original);

  if (prepared) {
    /* SIGKILL, which the agent removes an unclaimed instance with, is never blocked. */
    char **claimed = read_claim(&workdir);
    if (!claimed) {
      fprintf(stderr, "fast-sandbox helper: the claim is missing or malformed\n");
      return 2;
    }
    argv = claimed;
    first = 0;
    argc = 0;
    while (claimed[argc]) argc++;
  }
  if (first >= argc) {
    fprintf(stderr, "fast-sandbox helper: no command to run\n");
    return 2;
  }

  if (!prepared && argc > 1 && strcmp(argv[1], "--pause") == 0) {
    for (;;) {
      siginfo_t info;
      int sig = sigwaitinfo(&handled, &info);
      if (sig == SIGTERM || sig == SIGINT) return 0;
      if (sig == SIGCHLD) while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
  }

  int started[2];
  if (pipe2(started, O_CLOEXEC) < 0) {
    fprintf(stderr, "fast-sandbox helper: pipe: %s\n", strerror(errno));
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    int error = errno;
    char text[64];
    int length = snprintf(text, sizeof text, "failed fork %d\n", error);
    fprintf(stderr, "fast-sandbox helper: fork: %s\n", strerror(error));
    record("command-start", text, (size_t)length, 0);
    return 1;
  }
  if (child == 0) {
    close(started[0]);
    sigprocmask(SIG_SETMASK, &original, NULL);
    const char *step, *path;
    /* Made as root, entered as the user: a directory the user cannot enter fails the start (EACCES), as with runc. */
    if (workdir && make_directory(workdir, &step, &path) < 0) report_failure(started[1], step, path);
    if (user && become_user(user, &step, &path) < 0) report_failure(started[1], step, path);
    if (workdir && enter_directory(workdir, &step, &path) < 0) report_failure(started[1], step, path);
    path = run_command(argv + first);
    report_failure(started[1], "exec", path);
  }
  close(started[1]);
  /* Signals stay blocked (queued) meanwhile; the child execs or fails within moments. */
  char report[64 + PATH_MAX];
  size_t length = 0;
  for (;;) {
    ssize_t got = read(started[0], report + length, sizeof report - length);
    if (got > 0 && (length += (size_t)got) < sizeof report) continue;
    if (got < 0 && errno == EINTR) continue;
    break;
  }
  close(started[0]);
  if (length == 0) record("command-start", "started\n", 8, 0);
  else record("command-start", report, length, 0);

  /* The daemon acts as the image's user (and group) too when a request names none (packages/envd: -default-user). */
  char **envd_env = envd ? envd_environment(user) : NULL;
  if (envd && !envd_env) {
    fprintf(stderr, "fast-sandbox helper: cannot start the in-sandbox daemon: out of memory\n");
    envd = NULL;
  }
  long long envd_started_ms = now_ms(), envd_restart_ms = -1;
  int envd_backoff_ms = ENVD_MIN_BACKOFF_MS;
  pid_t envd_pid = envd ? start_envd(envd, envd_env, &original) : -1;
  if (envd && envd_pid < 0) envd_restart_ms = envd_retry_ms(&envd_backoff_ms);
  if (resume_signal) {
    char text[16];
    int length = snprintf(text, sizeof text, "%d\n", DAEMON_RESUME_SIGNAL);
    record("daemon-resume-signal", text, (size_t)length, 0);
  }

  int child_running = 1;
  int child_code = 0;
  int stopping = 0;
  for (;;) {
    siginfo_t info;
    int sig;
    if (envd_restart_ms >= 0) {
      long long wait_ms = envd_restart_ms - now_ms();
      if (wait_ms < 0) wait_ms = 0;
      struct timespec timeout = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
      sig = sigtimedwait(&handled, &info, &timeout);
      if (sig < 0 && errno == EAGAIN) {
        envd_restart_ms = -1;
        envd_pid = start_envd(envd, envd_env, &original);
        envd_started_ms = now_ms();
        if (envd_pid < 0) envd_restart_ms = envd_retry_ms(&envd_backoff_ms);
        continue;
      }
    } else {
      sig = sigwaitinfo(&handled, &info);
    }
    if (sig < 0) continue; /* EINTR */
    if (sig == SIGCHLD) {
      int status;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == child) {
          child_running = 0;
          child_code = exit_code_of(status);
          record_exit(child_code);
        } else if (pid == envd_pid) {
          envd_pid = -1;
          if (stopping || (WIFEXITED(status) && WEXITSTATUS(status) == ENVD_CANNOT_RUN)) continue;
          if (now_ms() - envd_started_ms >= ENVD_STABLE_MS) envd_backoff_ms = ENVD_MIN_BACKOFF_MS;
          envd_restart_ms = envd_retry_ms(&envd_backoff_ms);
        }
      }
      if (!child_running && stopping) return child_code;
      continue;
    }
    if (resume_signal && sig == DAEMON_RESUME_SIGNAL) {
      if (envd_pid > 0) kill(envd_pid, SIGUSR2);
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) {
      if (envd_pid > 0) kill(envd_pid, SIGTERM);
      envd_restart_ms = -1; /* a restart due (a dead or unforked daemon) is dropped too: the sandbox stops */
    }
    if (child_running) {
      kill(child, sig);
      if (sig == SIGTERM || sig == SIGINT) stopping = 1;
    } else if (sig == SIGTERM || sig == SIGINT) {
      return child_code;
    }
  }
}
