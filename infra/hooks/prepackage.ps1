# azd prepackage hook (Windows PowerShell / pwsh; azure.yaml runs it from the project root). Same job as
# prepackage.sh: checked-hash bytecode for the Python version the app runs on (PYTHON_VERSION, default 3.11), or a
# note and exit 0 when no such Python is installed (bytecode only speeds up cold starts).
# Windows has no `python3` as a rule and `python` may be the Microsoft Store alias that runs nothing, so the
# launcher (`py -3.11`) comes first and every candidate must really answer with its version.
$want = if ($env:PYTHON_VERSION) { $env:PYTHON_VERSION } else { '3.11' }
$found = $null
$seen = @()
foreach ($candidate in @("py -$want", 'py -3', 'python3', 'python')) {
    $parts = $candidate -split ' '
    $exe = $parts[0]
    $prefix = @($parts | Select-Object -Skip 1)
    if (-not (Get-Command $exe -CommandType Application -ErrorAction SilentlyContinue)) { continue }
    $have = & $exe @prefix -c "import sys; print('%d.%d' % sys.version_info[:2])" 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $have) { continue }
    if ("$have".Trim() -eq $want) { $found = @($exe) + $prefix; break }
    $seen += "$candidate ($("$have".Trim()))"
}
if (-not $found) {
    $also = if ($seen) { " (found $($seen -join ', '))" } else { '' }
    Write-Warning ("prepackage: no Python $want on PATH${also}: deploying without precompiled bytecode; the app " +
        "runs the same, each cold start compiles its modules (install Python $want to ship .pyc files)")
    exit 0
}
Write-Host "prepackage: compiling bytecode with $($found -join ' ') (Python $want, checked-hash)"
$exe = $found[0]
$prefix = @($found | Select-Object -Skip 1)
& $exe @prefix -m compileall -q -f --invalidation-mode checked-hash function_app.py shared
exit $LASTEXITCODE
