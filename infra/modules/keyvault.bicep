// Key Vault for the Twilio secrets (DESIGN "Secrets"): RBAC only, soft delete + purge protection.
// A secret is written only when writeSecrets is true and its @secure() parameter is non-empty: a secret resource in
// every deployment would add a version (and push the expiry out) on each `azd up`, overwriting a token rotated since
// with `az keyvault secret set`. Otherwise set and rotate them with `az keyvault secret set`.
param name string
param location string
param tags object

@secure()
param twilioAuthToken string = ''

@secure()
param twilioApiKeySecret string = ''

@secure()
param twilioWebhookSharedKey string = ''

@description('Write the non-empty secrets above in this deployment (main.bicep writeTwilioSecrets, one-shot via azd).')
param writeSecrets bool = false

@description('Days until a secret written by this deployment counts as expired (rotation reminder).')
@minValue(1)
param secretExpiryDays int = 365

@description('Deployment time; only a default (utcNow() is allowed nowhere else).')
param deployedAt string = utcNow()

var secretExpiresOn = dateTimeToEpoch(dateTimeAdd(deployedAt, 'P${secretExpiryDays}D'))

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  // checkov:skip=CKV_AZURE_109: a Flex Consumption app without VNet integration reads the vault over its public endpoint; a deny-by-default firewall would lock the app out (access is RBAC-only)
  // checkov:skip=CKV_AZURE_189: same reason: public network access must stay on for the app (no private endpoint without VNet integration)
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Written at deploy time only when asked and given; rotate by `az keyvault secret set` (the app re-reads within
// SECRET_CACHE_SECONDS).
module authTokenSecret 'secret.bicep' = if (writeSecrets && !empty(twilioAuthToken)) {
  name: 'secret-twilio-auth-token'
  params: {
    vaultName: vault.name
    name: 'twilio-auth-token'
    value: twilioAuthToken
    expiresOn: secretExpiresOn
  }
}

module apiKeySecret 'secret.bicep' = if (writeSecrets && !empty(twilioApiKeySecret)) {
  name: 'secret-twilio-api-key-secret'
  params: {
    vaultName: vault.name
    name: 'twilio-api-key-secret'
    value: twilioApiKeySecret
    expiresOn: secretExpiresOn
  }
}

module webhookSharedKey 'secret.bicep' = if (writeSecrets && !empty(twilioWebhookSharedKey)) {
  name: 'secret-twilio-webhook-shared-key'
  params: {
    vaultName: vault.name
    name: 'twilio-webhook-shared-key'
    value: twilioWebhookSharedKey
    expiresOn: secretExpiresOn
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
