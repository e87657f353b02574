/*
 * pause: the first process of every Skiff pod sandbox.
 *
 * It holds the pod's namespaces open while the pod's containers come and go.
 * As PID 1 of the pod's PID namespace (when the namespace is shared) it also
 * reaps orphaned children, so that zombies never pile up. It exits 0 on
 * SIGTERM or SIGINT; the runtime stops the sandbox that way.
 *
 * Build: gcc -static -Os -o pause pause.c
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_child(int sig)
{
    (void)sig;
    /* Reap every child that has exited; several may share one signal. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv)
{
    struct sigaction sa;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("skiff pause 1.0");
        return 0;
    }
    if (getpid() != 1) {
        /* Still useful outside a PID namespace, but worth a note in the log. */
        fputs("pause: not running as PID 1\n", stderr);
    }

    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }

    for (;;) {
        pause();
    }
    /* not reached */
    return 42;
}
