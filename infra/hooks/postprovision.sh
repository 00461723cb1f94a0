# azd postprovision hook (posix sh; azure.yaml runs it from the project root, with the azd environment and the
# Bicep outputs as environment variables). Two jobs:
# 1. TWILIO_WRITE_SECRETS is one-shot: the provision that just ran wrote the Twilio secrets from the azd
#    environment into Key Vault, so set it back to false. Otherwise every later `azd up` would write them again (a
#    new secret version, expiry pushed out) over a token rotated since with `az keyvault secret set`.
# 2. Point the Twilio number at the new functions (infra/hooks/configure_twilio_number.py: standard library only,
#    so any system python3 runs it; stock Debian/Ubuntu and macOS have python3 but no `python`).
# azure.yaml sets continueOnError: a failure here is reported by azd and the deploy goes on.
status=0
case "${TWILIO_WRITE_SECRETS:-}" in
  true|True|TRUE)
    if command -v azd >/dev/null 2>&1 \
        && azd env set TWILIO_WRITE_SECRETS false ${AZURE_ENV_NAME:+--environment "$AZURE_ENV_NAME"} >/dev/null; then
      echo "key vault: the Twilio secrets set in the azd environment were written; TWILIO_WRITE_SECRETS is false again," \
        "so later provisions leave the vault's secrets alone"
    else
      echo "key vault: the Twilio secrets set in the azd environment were written; run" \
        "'azd env set TWILIO_WRITE_SECRETS false' or the next provision writes them again" >&2
      status=1
    fi
    ;;
  *)
    if [ -n "${TWILIO_AUTH_TOKEN:-}${TWILIO_API_KEY_SECRET:-}${TWILIO_WEBHOOK_SHARED_KEY:-}" ]; then
      echo "key vault: Twilio secrets in Key Vault left as they are (to write the azd environment's values:" \
        "azd env set TWILIO_WRITE_SECRETS true, then azd provision)"
    fi
    ;;
esac

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
      2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "twilio number: no python3 (3.8 or later) on PATH; set the webhooks in the Twilio console" \
    "(README, Deploy step 3)" >&2
  exit 1
fi
"$python" infra/hooks/configure_twilio_number.py || status=$?
exit "$status"
