// switchboard: everything `azd up` provisions (see README, Deploy and DESIGN "Infra").
// Subscription scope, azd-template style: one resource group per azd environment, hand-written modules inside it.
// Written for the Bicep subset that pycep-parser 0.5.1 (checkov's parser) reads: no lambdas, multi-line arrays.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags every resource.')
param environmentName string

// Regions that offer Flex Consumption (`az functionapp list-flexconsumption-locations`); azd offers only these.
@minLength(1)
@description('Azure region of every resource (must offer Flex Consumption).')
@metadata({
  azd: {
    type: 'location'
  }
})
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
param location string

// Only versions Flex Consumption runs Python on (its documented list: 3.10, 3.11, 3.12) and the app supports: 3.10 is
// left out (the app targets 3.11+, and Flex support for 3.10 ends with its end of life, October 2026). Add a version
// here only once Flex lists it (`az functionapp list-flexconsumption-runtimes`).
@description('Python version of the Functions runtime (functionAppConfig.runtime.version).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Object id of the developer running azd; gets Key Vault Secrets Officer and the storage data roles. Empty = none.')
param principalId string = ''

@description('Kind of principal principalId is: User when signed in as a person, ServicePrincipal in CI (azd sets AZURE_PRINCIPAL_TYPE).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@secure()
@description('Twilio auth token. Written to Key Vault as secret twilio-auth-token only when writeTwilioSecrets is true; never an app setting.')
param twilioAuthToken string = ''

@secure()
@description('Twilio API key secret (optional). Written to Key Vault as twilio-api-key-secret only when writeTwilioSecrets is true.')
param twilioApiKeySecret string = ''

@secure()
@description('Twilio webhook SharedKey secret (optional, for Webhook Rules). Written to Key Vault as twilio-webhook-shared-key only when writeTwilioSecrets is true.')
param twilioWebhookSharedKey string = ''

// A Key Vault secret set on every deployment gets a new version (and a new expiry) each `azd up`, overwriting a token
// rotated since with `az keyvault secret set`. So the values above are written only on purpose: this is true for one
// provision (TWILIO_WRITE_SECRETS=true), and the postprovision hook sets it back to false.
@description('Write the non-empty Twilio secrets above to Key Vault in this deployment (azd: TWILIO_WRITE_SECRETS, one-shot).')
param writeTwilioSecrets bool = false

@description('Twilio account SID (AC...).')
param twilioAccountSid string = ''

@description('Default sender number (E.164).')
param twilioFromNumber string = ''

@description('Messaging service SID (MG...), optional.')
param twilioMessagingServiceSid string = ''

@description('Twilio API key SID (SK...), optional; REST calls then use it with secret twilio-api-key-secret.')
param twilioApiKeySid string = ''

@description('Said when a call comes in.')
param voiceGreeting string = 'Hello from Azure!'

@description('Reply to ordinary inbound SMS; empty = no reply.')
param smsAutoReply string = ''

@description('Menu option 0 dials this number; empty = option off.')
param forwardToNumber string = ''

// Not named "secret…": Bicep's secure-secrets-in-params linter would take a cache duration for a secret.
@description('How long the app caches values read from Key Vault, in seconds (app setting SECRET_CACHE_SECONDS).')
param vaultCacheSeconds string = '300'

@description('Timeout of every Twilio REST request, in seconds.')
param twilioHttpTimeoutSeconds string = '10'

@description('Seconds after a send in doubt (plus the HTTP timeout) before the Twilio list is trusted to show it (absent then = sent again).')
param reconcileSettleSeconds string = '60'
@description('Threads the Python worker runs sync functions on, per instance (PYTHON_THREADPOOL_THREAD_COUNT; the worker default is min(32, cores + 4)). With queue batchSize 16, 16 lets every message of a batch send at once; HTTP pools are sized to it. Per-instance sends in flight = this; whole app = this x maximumInstanceCount (see README, Capacity).')
param pythonThreadpoolThreadCount string = '16'

@description('Guardrail: ISO 3166 region codes sends may go to, comma-separated (US,CA); empty = every region (ALLOWED_DESTINATIONS).')
param allowedDestinations string = ''

@description('Guardrail: sends to one phone number (SMS, WhatsApp and calls together) in any 60 minutes; empty = no cap (MAX_SENDS_PER_RECIPIENT_PER_HOUR).')
param maxSendsPerRecipientPerHour string = ''

@description('Guardrail: sends of the whole app per clock hour (UTC), the rest deferred to the next hour; empty = no budget (MAX_SENDS_PER_HOUR).')
param maxSendsPerHour string = ''

@description('Guardrail: at most one reply (auto-reply, HELP) per inbound sender in this many seconds; empty = no limit (AUTO_REPLY_MIN_INTERVAL_SECONDS).')
param autoReplyMinIntervalSeconds string = ''

@description('Pacing: on = each sender\'s messages submitted at its rate (SENDER_RATES); off = as fast as the queue delivers (PACING).')
@allowed([
  'on'
  'off'
])
param pacing string = 'on'

@description('Pacing: messages per second by sender, e.g. +18005550100=3,MG0123...=50,longcode=1; empty = defaults by number type (SENDER_RATES).')
param senderRates string = ''

@description('Pacing: seconds of a sender\'s sending that may wait in Twilio\'s queue (PACING_LEAD_SECONDS).')
param pacingLeadSeconds string = '2'

@description('Spread the app over availability zones (only in regions that offer it for Flex; adds always-ready instances). Its storage account is then ZRS, as Azure requires.')
param zoneRedundant bool = false

@description('Days until a Twilio secret written by the deployment (writeTwilioSecrets) counts as expired in Key Vault (rotation reminder).')
@minValue(1)
param twilioSecretExpiryDays int = 365

@description('E-mail addresses (comma-separated) that receive the alerts; empty = alerts fire with no one notified.')
param alertEmailAddresses string = ''

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

// Flex runs Python HTTP functions one at a time per instance unless this is set: every webhook and status callback
// (about 3 per send) would then hold an instance of its own, scaling out (cold starts, the instance cap shared with
// the queue functions) where one instance's thread pool could serve them. Our HTTP functions are sync, so they run
// on the worker's PYTHON_THREADPOOL_THREAD_COUNT threads: keep the two equal (README, Deploy).
@description('Concurrent HTTP executions per instance (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency); keep it equal to pythonThreadpoolThreadCount.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Contract names (DESIGN "Queue functions" / "Tables"); the same values go to the app settings below.
var smsQueueName = 'outbound-sms'
var callQueueName = 'outbound-calls'
var inboundQueueName = 'inbound-sms'
// Each send's final outcome, for consumers outside the app (OUTCOMES_QUEUE). The app only writes to it, so it has
// no -poison twin: a consumer that reads it keeps its own.
var outcomesQueueName = 'outbound-outcomes'
var queueNames = [
  smsQueueName
  '${smsQueueName}-poison'
  callQueueName
  '${callQueueName}-poison'
  inboundQueueName
  '${inboundQueueName}-poison'
  outcomesQueueName
]
var tableNames = [
  'sends'
  'optouts'
  'guardrails'
]
var deploymentContainerName = 'app-package-${resourceToken}'
var functionAppName = 'func-${resourceToken}'

// Well-known built-in role definition ids (learn.microsoft.com, "Azure built-in roles").
var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueNames: queueNames
    tableNames: tableNames
    // A zone-redundant Flex app must keep its host storage zone-redundant (ZRS).
    skuName: zoneRedundant ? 'Standard_ZRS' : 'Standard_GRS'
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    twilioAuthToken: twilioAuthToken
    twilioApiKeySecret: twilioApiKeySecret
    twilioWebhookSharedKey: twilioWebhookSharedKey
    writeSecrets: writeTwilioSecrets
    secretExpiryDays: twilioSecretExpiryDays
  }
}

// The app's identity: data roles on storage, read secrets, publish telemetry.
module appRoles 'modules/roles.bicep' = {
  name: 'app-roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    keyVaultRoleId: roleIds.keyVaultSecretsUser
    appInsightsName: monitoring.outputs.appInsightsName
    assignMetricsPublisher: true
    storageRoleIds: [
      roleIds.storageBlobDataOwner
      roleIds.storageQueueDataContributor
      roleIds.storageTableDataContributor
    ]
    metricsPublisherRoleId: roleIds.monitoringMetricsPublisher
  }
}

// The developer running azd: run locally against the cloud and set the Twilio secret.
module developerRoles 'modules/roles.bicep' = if (!empty(principalId)) {
  name: 'developer-roles'
  scope: rg
  params: {
    principalId: principalId
    principalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    keyVaultRoleId: roleIds.keyVaultSecretsOfficer
    appInsightsName: monitoring.outputs.appInsightsName
    assignMetricsPublisher: false
    storageRoleIds: [
      roleIds.storageBlobDataOwner
      roleIds.storageQueueDataContributor
      roleIds.storageTableDataContributor
    ]
    metricsPublisherRoleId: roleIds.monitoringMetricsPublisher
  }
}

module api 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  dependsOn: [
    appRoles
  ]
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    twilioAccountSid: twilioAccountSid
    twilioFromNumber: twilioFromNumber
    twilioMessagingServiceSid: twilioMessagingServiceSid
    twilioApiKeySid: twilioApiKeySid
    smsQueueName: smsQueueName
    callQueueName: callQueueName
    inboundQueueName: inboundQueueName
    outcomesQueueName: outcomesQueueName
    voiceGreeting: voiceGreeting
    smsAutoReply: smsAutoReply
    forwardToNumber: forwardToNumber
    vaultCacheSeconds: vaultCacheSeconds
    twilioHttpTimeoutSeconds: twilioHttpTimeoutSeconds
    reconcileSettleSeconds: reconcileSettleSeconds
    pythonThreadpoolThreadCount: pythonThreadpoolThreadCount
    allowedDestinations: allowedDestinations
    maxSendsPerRecipientPerHour: maxSendsPerRecipientPerHour
    maxSendsPerHour: maxSendsPerHour
    autoReplyMinIntervalSeconds: autoReplyMinIntervalSeconds
    pacing: pacing
    senderRates: senderRates
    pacingLeadSeconds: pacingLeadSeconds
    zoneRedundant: zoneRedundant
  }
}

// PUBLIC_BASE_URL from the host name Azure gave the app (the site cannot read its own defaultHostName).
module publicUrl 'modules/appsettings.bicep' = {
  name: 'public-base-url'
  scope: rg
  params: {
    appName: api.outputs.name
    publicBaseUrl: 'https://${api.outputs.hostName}'
  }
}

// Alerts (dead letters, webhook 5xx, function failures, Twilio secret expiry) mailed to alertEmailAddresses.
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    keyVaultName: keyVault.outputs.name
    emailAddresses: empty(alertEmailAddresses) ? [] : split(alertEmailAddresses, ',')
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

// azd stores these in .azure/<env>/.env; the webhook URLs are what goes into the Twilio console.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_HOST string = api.outputs.hostName
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.hostName}'
output VOICE_WEBHOOK_URL string = 'https://${api.outputs.hostName}/api/voice'
output SMS_WEBHOOK_URL string = 'https://${api.outputs.hostName}/api/sms'
output MESSAGE_STATUS_CALLBACK_URL string = 'https://${api.outputs.hostName}/api/status/message'
output CALL_STATUS_CALLBACK_URL string = 'https://${api.outputs.hostName}/api/status/call'
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output ALERT_ACTION_GROUP_ID string = alerts.outputs.actionGroupId
output WORKBOOK_ID string = workbook.outputs.id
