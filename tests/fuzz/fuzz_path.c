/* libFuzzer target: mp_path_normalize, which reads request targets straight off the network.
 * Beyond "no crash, no leak", it checks what routing relies on: a normalised path starts with
 * '/', holds no "." or ".." segment, and normalising it again changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "magpie/h1.h"

static int has_dot_segment(const char *p)
{
    const char *end = strchr(p, '?');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '/')
            continue;
        const char *s = p + i + 1;
        size_t rest = len - i - 1;
        if ((rest >= 1 && s[0] == '.' && (rest == 1 || s[1] == '/')) ||
            (rest >= 2 && s[0] == '.' && s[1] == '.' && (rest == 2 || s[2] == '/')))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0 || size > 8192)
        return 0;
    char *path = malloc(size + 1);
    memcpy(path, data, size);
    path[size] = '\0';
    const char *why = NULL;
    char *norm = mp_path_normalize(path, true, (data[0] & 1) != 0, &why);
    if (norm != NULL) {
        if (strcmp(norm, "*") != 0 && (norm[0] != '/' || has_dot_segment(norm)))
            abort();
        char *again = mp_path_normalize(norm, true, (data[0] & 1) != 0, &why);
        if (again == NULL || strcmp(again, norm) != 0)
            abort();
        free(again);
        free(norm);
    }
    free(path);
    return 0;
}
