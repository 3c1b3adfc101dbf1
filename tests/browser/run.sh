#!/bin/sh
# run.sh - the browser tests as `make test` runs them: install playwright-core
# from package-lock.json into tests/browser/node_modules when it is missing
# or the lock file changed (npm ci; playwright-core never downloads a
# browser, the tests drive Debian's /usr/bin/chromium), then run run.js from
# the top of the repo. Arguments go to run.js (filters).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
stamp=node_modules/.sb-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ ! -f node_modules/playwright-core/package.json ] || [ "$have" != "$want" ]
then
    echo "browser: npm ci in tests/browser (playwright-core only)"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 \
        npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi
cd ../..
exec node tests/browser/run.js "$@"
