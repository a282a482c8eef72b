/* magpie-cp: command line, then the loop (docs/control-plane.md). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "magpie/log.h"

typedef struct cp_options {
    const char *dir;
    const char *listen;
    const char *rest_listen;
    bool step;
    bool validate;
    unsigned debounce_ms;
} cp_options_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: magpie-cp --dir DIR [options]\n"
                 "  -d, --dir DIR              resource files (*.yaml, *.yml, *.json) to serve\n"
                 "      --listen HOST:PORT     gRPC (h2c) and REST (default 127.0.0.1:18000)\n"
                 "      --rest-listen HOST:PORT  a second, REST-only (HTTP/1.1) listener\n"
                 "      --step                 stage directory changes; SIGUSR1 releases one\n"
                 "                             resource change at a time\n"
                 "      --debounce-ms N        wait for the directory to settle (default 100)\n"
                 "      --validate             load DIR, report the first invalid file, exit\n"
                 "  -l, --log-level LEVEL      trace|debug|info|warning|error|critical|off\n"
                 "  -h, --help\n"
                 "Serves Listener, RouteConfiguration, Cluster, ClusterLoadAssignment and Secret\n"
                 "resources over ADS (SotW and delta), the per-type xDS services and REST-JSON.\n");
}

static int parse_args(int argc, char **argv, cp_options_t *o)
{
    static const struct option longs[] = {{"dir", required_argument, NULL, 'd'},
                                          {"listen", required_argument, NULL, 'L'},
                                          {"rest-listen", required_argument, NULL, 'R'},
                                          {"step", no_argument, NULL, 'S'},
                                          {"debounce-ms", required_argument, NULL, 'D'},
                                          {"validate", no_argument, NULL, 'V'},
                                          {"log-level", required_argument, NULL, 'l'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    mp_log_level_t level;
    for (int ch; (ch = getopt_long(argc, argv, "d:l:h", longs, NULL)) != -1;) {
        switch (ch) {
        case 'd':
            o->dir = optarg;
            break;
        case 'L':
            o->listen = optarg;
            break;
        case 'R':
            o->rest_listen = optarg;
            break;
        case 'S':
            o->step = true;
            break;
        case 'V':
            o->validate = true;
            break;
        case 'D':
            o->debounce_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'l':
            if (mp_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "magpie-cp: unknown log level \"%s\"\n", optarg);
                return 2;
            }
            mp_log_set_level(level);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o->dir == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static void on_store_change(void *arg)
{
    mp_cp_server_push(arg);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    mp_log_info("magpie-cp: signal %d, exiting", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

static int validate_only(const char *dir)
{
    mp_cp_snapshot_t s;
    mp_err_t err;
    if (mp_cp_snapshot_load(dir, &s, &err) != 0) {
        fprintf(stderr, "magpie-cp: %s\n", err.msg);
        return 1;
    }
    printf("%zu resources OK\n", s.n);
    mp_cp_snapshot_free(&s);
    return 0;
}

/* The store calls back into the server, which does not exist yet while the store loads. */
static mp_cp_server_t *the_server;

static void on_change_trampoline(void *arg)
{
    if (the_server != NULL)
        on_store_change(the_server);
}

static int serve(const cp_options_t *o)
{
    struct ev_loop *loop = ev_default_loop(0);
    mp_cp_store_t store;
    mp_err_t err;
    if (mp_cp_store_open(&store, loop, o->dir, o->step, o->debounce_ms / 1000.0,
                         on_change_trampoline, NULL, &err) != 0) {
        fprintf(stderr, "magpie-cp: %s\n", err.msg);
        mp_cp_store_close(&store);
        return 1;
    }
    the_server = mp_cp_server_new(loop, &store, o->listen, o->rest_listen, &err);
    if (the_server == NULL) {
        fprintf(stderr, "magpie-cp: %s\n", err.msg);
        mp_cp_store_close(&store);
        return 1;
    }
    mp_log_info("magpie-cp: serving %zu resources from %s on %s%s%s%s", store.live.n, o->dir,
                o->listen, o->rest_listen ? " and REST on " : "",
                o->rest_listen ? o->rest_listen : "", o->step ? " (step mode)" : "");
    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, on_stop, SIGTERM);
    ev_signal_init(&sigint, on_stop, SIGINT);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigint);
    ev_run(loop, 0);
    mp_cp_server_free(the_server);
    the_server = NULL;
    mp_cp_store_close(&store);
    ev_signal_stop(loop, &sigterm);
    ev_signal_stop(loop, &sigint);
    ev_loop_destroy(loop);
    return 0;
}

int main(int argc, char **argv)
{
    cp_options_t o = {.listen = "127.0.0.1:18000", .debounce_ms = 100};
    mp_log_set_level(MP_LOG_INFO);
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    return o.validate ? validate_only(o.dir) : serve(&o);
}
