#!/usr/bin/env bash
# Format check for `make check-format` and `make test`: clang-format --dry-run --Werror over our C
# sources and headers (never build/ output or Debian's llhttp).  Exit 0 when clean, 1 otherwise.
set -u
cd "$(dirname "$0")/.."
mapfile -t files < <(find proxy filters xds include tests/unit tests/fuzz \
    -path build -prune -o -type f \( -name '*.c' -o -name '*.h' \) -print 2>/dev/null | sort)
if [ ${#files[@]} -eq 0 ]; then
    echo "check_format: no C files"
    exit 0
fi
if clang-format --dry-run --Werror "${files[@]}"; then
    echo "check_format: ${#files[@]} files clean"
    exit 0
fi
echo "check_format: run 'make format' (clang-format -i) on the files above"
exit 1
