/*
 * The pod sandbox's process: holds the pod's namespaces open and does nothing
 * else. containerd starts one per pod (the CRI "sandbox image"); it must reap
 * orphans (it is PID 1 when the pod shares its PID namespace) and exit
 * cleanly on SIGTERM or SIGINT. Written here so that the single-node cluster
 * (scripts/cluster.sh) needs no registry; built statically and packed into an
 * image from scratch by scripts/cluster.sh.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
