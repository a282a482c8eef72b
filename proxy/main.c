/* magpie: command line (Envoy's flags where they overlap), then the server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/bootstrap.h"
#include "magpie/log.h"
#include "magpie/server.h"
#include "magpie/stats.h"

#define MAGPIE_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: magpie [options]\n"
            "  -c, --config-path FILE     bootstrap (Envoy v3, YAML or JSON)\n"
            "      --config-yaml YAML     bootstrap text, merged over the file\n"
            "      --concurrency N        worker threads (default 2)\n"
            "      --mode serve|validate  validate: check the config and exit\n"
            "  -l, --log-level LEVEL      trace|debug|info|warning|error|critical|off\n"
            "      --service-node NAME    node id\n"
            "      --service-cluster NAME node cluster\n"
            "      --drain-time-s N       graceful drain on shutdown (default 600)\n"
            "      --version\n"
            "With no config, magpie listens on 127.0.0.1:15001, proxies to 127.0.0.1:8080 and\n"
            "serves admin on 127.0.0.1:15000.\n");
}

static int parse_uint(const char *flag, const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "magpie: %s: expected an integer in [%u, %u], got \"%s\"\n", flag, min, max,
                s);
        return MP_ERROR;
    }
    *out = (unsigned)v;
    return 0;
}

enum { OPT_YAML = 256, OPT_CONC, OPT_MODE, OPT_NODE, OPT_CLUSTER, OPT_DRAIN, OPT_VERSION };

static int parse_args(int argc, char **argv, mp_options_t *o)
{
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"config-yaml", required_argument, NULL, OPT_YAML},
        {"concurrency", required_argument, NULL, OPT_CONC},
        {"mode", required_argument, NULL, OPT_MODE},
        {"log-level", required_argument, NULL, 'l'},
        {"service-node", required_argument, NULL, OPT_NODE},
        {"service-cluster", required_argument, NULL, OPT_CLUSTER},
        {"drain-time-s", required_argument, NULL, OPT_DRAIN},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config_path = optarg;
            break;
        case OPT_YAML:
            o->config_yaml = optarg;
            break;
        case OPT_CONC:
            if (parse_uint("--concurrency", optarg, 1, 256, &o->concurrency) < 0)
                return MP_ERROR;
            break;
        case OPT_MODE:
            if (strcmp(optarg, "serve") == 0) {
                o->mode = MP_MODE_SERVE;
            } else if (strcmp(optarg, "validate") == 0) {
                o->mode = MP_MODE_VALIDATE;
            } else {
                fprintf(stderr, "magpie: --mode: expected serve or validate, got \"%s\"\n", optarg);
                return MP_ERROR;
            }
            break;
        case 'l':
            o->log_level = optarg;
            break;
        case OPT_NODE:
            o->service_node = optarg;
            break;
        case OPT_CLUSTER:
            o->service_cluster = optarg;
            break;
        case OPT_DRAIN:
            if (parse_uint("--drain-time-s", optarg, 0, 86400, &o->drain_time_s) < 0)
                return MP_ERROR;
            break;
        case OPT_VERSION:
            printf("magpie %s\n", MAGPIE_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return MP_ERROR;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "magpie: unexpected argument \"%s\"\n", argv[optind]);
        return MP_ERROR;
    }
    return 0;
}

int main(int argc, char **argv)
{
    mp_options_t opts = {.concurrency = 2, .mode = MP_MODE_SERVE, .drain_time_s = 600};
    if (parse_args(argc, argv, &opts) < 0)
        return 2;
    if (opts.log_level != NULL) {
        mp_log_level_t level;
        if (mp_log_level_parse(opts.log_level, &level) < 0) {
            fprintf(stderr, "magpie: --log-level: unknown level \"%s\"\n", opts.log_level);
            return 2;
        }
        mp_log_set_level(level);
    }
    mp_stats_thread_init();
    mp_err_t err = {{0}};
    bool used_default = false;
    mp_config_t *cfg = mp_bootstrap_load(&opts, &used_default, &err);
    if (cfg == NULL) {
        fprintf(stderr, "magpie: invalid configuration: %s\n", err.msg);
        return 1;
    }
    if (opts.mode == MP_MODE_VALIDATE) {
        printf("configuration '%s' OK\n", opts.config_path ? opts.config_path : "(inline)");
        mp_config_unref(cfg);
        return 0;
    }
    if (used_default)
        mp_log_info("no configuration given: using the embedded default (listener "
                    "127.0.0.1:15001 -> 127.0.0.1:8080, admin 127.0.0.1:15000)");
    mp_server_t server = {.opts = opts, .n_workers = opts.concurrency};
    atomic_init(&server.config, cfg);
    mp_server = &server;
    mp_log_info("magpie %s starting with %u workers", MAGPIE_VERSION, opts.concurrency);
    int rc = mp_server_run(&server, &err);
    if (rc < 0)
        mp_log(MP_LOG_CRITICAL, "cannot start: %s", err.msg);
    mp_config_unref(atomic_load(&server.config));
    return rc < 0 ? 1 : 0;
}
