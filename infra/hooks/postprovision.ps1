# azd postprovision hook (Windows PowerShell / pwsh). Same two jobs as postprovision.sh:
# 1. TWILIO_WRITE_SECRETS is one-shot: set it back to false after the provision that wrote the secrets, so later
#    provisions do not overwrite a token rotated with `az keyvault secret set`.
# 2. Point the Twilio number at the functions with infra/hooks/configure_twilio_number.py (standard library only).
#    The launcher `py -3` comes first: Windows has no `python3` as a rule, and `python` may be the Microsoft Store
#    alias that runs nothing, so every candidate must really run.
$status = 0
if ("$env:TWILIO_WRITE_SECRETS" -eq 'true') {
    $reset = $false
    if (Get-Command azd -ErrorAction SilentlyContinue) {
        $envArgs = if ($env:AZURE_ENV_NAME) { @('--environment', $env:AZURE_ENV_NAME) } else { @() }
        azd env set TWILIO_WRITE_SECRETS false @envArgs | Out-Null
        $reset = ($LASTEXITCODE -eq 0)
    }
    if ($reset) {
        Write-Host ("key vault: the Twilio secrets set in the azd environment were written; TWILIO_WRITE_SECRETS is false " +
            "again, so later provisions leave the vault's secrets alone")
    } else {
        Write-Warning ("key vault: the Twilio secrets set in the azd environment were written; run " +
            "'azd env set TWILIO_WRITE_SECRETS false' or the next provision writes them again")
        $status = 1
    }
} elseif ("$env:TWILIO_AUTH_TOKEN$env:TWILIO_API_KEY_SECRET$env:TWILIO_WEBHOOK_SHARED_KEY") {
    Write-Host ("key vault: Twilio secrets in Key Vault left as they are (to write the azd environment's " +
        "values: azd env set TWILIO_WRITE_SECRETS true, then azd provision)")
}

$python = $null
foreach ($candidate in @('py -3', 'python3', 'python')) {
    $parts = $candidate -split ' '
    $exe = $parts[0]
    $prefix = @($parts | Select-Object -Skip 1)
    if (-not (Get-Command $exe -CommandType Application -ErrorAction SilentlyContinue)) { continue }
    & $exe @prefix -c "import sys; sys.exit(sys.version_info < (3, 8))" 2>$null
    if ($LASTEXITCODE -eq 0) { $python = @($exe) + $prefix; break }
}
if (-not $python) {
    Write-Warning ("twilio number: no Python 3.8 or later found (py -3, python3, python); set the webhooks in " +
        "the Twilio console (README, Deploy step 3)")
    exit 1
}
$exe = $python[0]
$prefix = @($python | Select-Object -Skip 1)
& $exe @prefix infra/hooks/configure_twilio_number.py
if ($LASTEXITCODE -ne 0) { $status = $LASTEXITCODE }
exit $status
