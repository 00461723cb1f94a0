// One Key Vault secret. A module of its own so main/keyvault can skip it with a module condition while
// checkov still sees the secret's properties (it cannot look inside a conditional resource body).
param vaultName string
param name string

@secure()
param value string

@description('Unix time after which the secret counts as expired (a rotation reminder; see README, Deploy).')
param expiresOn int

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: expiresOn
    }
  }
}

output name string = secret.name
