# azd prepackage hook (posix sh; azure.yaml runs it from the project root).
# Ships checked-hash bytecode: a deployed Flex package is read-only, so without .pyc files every cold start compiles
# the app's modules again (bench/cold_start.py: COMPILE). checked-hash .pyc files stay valid whatever mtimes
# packaging gives the sources. Python only reads .pyc files of its own version, so this compiles with the version
# the app runs on (PYTHON_VERSION from the azd environment, default 3.11) and skips otherwise.
#
# Bytecode is an optimisation, not a requirement: with no suitable Python on PATH this says so and lets the deploy
# go on (exit 0). A source file that does not compile fails the deploy (the app would not start either).
# Needs only sh and a Python from the system: stock Debian/Ubuntu and macOS have python3 but no `python`.
want="${PYTHON_VERSION:-3.11}"
found=""
for candidate in "python$want" python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then
    have=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    if [ "$have" = "$want" ]; then
      found="$candidate"
      break
    fi
    seen="${seen:-}${seen:+, }$candidate ($have)"
  fi
done
if [ -z "$found" ]; then
  echo "prepackage: no Python $want on PATH${seen:+ (found $seen)}: deploying without precompiled bytecode;" \
    "the app runs the same, each cold start compiles its modules (install python$want to ship .pyc files)" >&2
  exit 0
fi
echo "prepackage: compiling bytecode with $(command -v "$found") (Python $want, checked-hash)"
exec "$found" -m compileall -q -f --invalidation-mode checked-hash function_app.py shared
