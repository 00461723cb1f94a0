// Flex Consumption plan + Linux function app (Python, v2 model), running as the user-assigned identity.
param name string
param planName string
param location string
param tags object

param identityId string
param identityClientId string

param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string

param appInsightsConnectionString string
param keyVaultUri string

param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int

@description('Concurrent HTTP executions per instance; Flex runs Python HTTP functions one at a time per instance without it.')
param httpPerInstanceConcurrency int

param twilioAccountSid string
param twilioFromNumber string
param twilioMessagingServiceSid string
param twilioApiKeySid string

param smsQueueName string
param callQueueName string
param inboundQueueName string
@description('Queue receiving one event per outcome of each queued send (OUTCOMES_QUEUE; README, Outcome events).')
param outcomesQueueName string
param voiceGreeting string
param smsAutoReply string
param forwardToNumber string
param vaultCacheSeconds string
param twilioHttpTimeoutSeconds string
param reconcileSettleSeconds string
param pythonThreadpoolThreadCount string
param allowedDestinations string
param maxSendsPerRecipientPerHour string
param maxSendsPerHour string
param autoReplyMinIntervalSeconds string
param pacing string
param senderRates string
param pacingLeadSeconds string

@description('Spread instances over availability zones (regions that offer it for Flex; keeps 2+ always-ready instances, billed).')
param zoneRedundant bool = false

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  // checkov:skip=CKV_AZURE_225: Flex zone redundancy is not offered in every region and keeps at least two always-ready instances per function group billed around the clock; opt in with the zoneRedundant parameter
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource app 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: Twilio calls the webhooks from the public internet, so public network access stays enabled (every webhook checks X-Twilio-Signature)
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances itself; siteConfig.numberOfWorkers is a Dedicated-plan setting that Flex does not use
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support the platform health check (healthCheckPath); /api/health is there for probes of your own
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP and ARM rejects siteConfig.ftpsState on Flex sites (code 51021); FTP and SCM basic auth are off via basicPublishingCredentialsPolicies below
  // checkov:skip=CKV_AZURE_17: Twilio cannot present client certificates on its webhook requests; requests are authenticated by signature instead
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      // No ftpsState: ARM rejects it for Flex Consumption sites (extended code 51021); Flex has no FTP at all,
      // and basic publishing credentials are off (ftpPolicy / scmPolicy below).
      minTlsVersion: '1.2'
      http20Enabled: true
      // No FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION here: Flex Consumption rejects both app
      // settings; the runtime (python + version) is declared in functionAppConfig.runtime below.
      // No secret values: the Twilio token lives in Key Vault only (KEY_VAULT_URL + the identity).
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        {
          // With host.json telemetryMode OpenTelemetry: the Python worker configures the Azure Monitor distro
          // (azure-monitor-opentelemetry, from requirements.txt) before it loads the app, exports the app's logs
          // and metrics itself, and tells the host so (capability WorkerOpenTelemetryEnabled): the host then
          // stops exporting the records the worker forwards, so each log record reaches App Insights once.
          // The exporter authenticates with APPLICATIONINSIGHTS_AUTHENTICATION_STRING (local auth is off).
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        {
          // The distro's HTTP client and Azure SDK spans record full URLs, and ours carry phone numbers (Twilio
          // list filters ?To=+1..., Table keys RowKey='%2B1...'): none of them. Twilio latency is the app's own
          // metric switchboard.twilio.duration, without the URL (README, Telemetry and metrics).
          name: 'OTEL_PYTHON_DISABLED_INSTRUMENTATIONS'
          value: 'azure_sdk,django,fastapi,flask,httpx,psycopg2,requests,urllib,urllib3'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          // Until modules/appsettings.bicep replaces it with https://<defaultHostName> (a self-reference here is a cycle).
          name: 'PUBLIC_BASE_URL'
          value: 'https://${name}.azurewebsites.net'
        }
        {
          name: 'TWILIO_ACCOUNT_SID'
          value: twilioAccountSid
        }
        {
          name: 'TWILIO_FROM_NUMBER'
          value: twilioFromNumber
        }
        {
          name: 'TWILIO_MESSAGING_SERVICE_SID'
          value: twilioMessagingServiceSid
        }
        {
          name: 'TWILIO_API_KEY_SID'
          value: twilioApiKeySid
        }
        {
          name: 'TWILIO_API_BASE_URL'
          value: 'https://api.twilio.com'
        }
        {
          name: 'SMS_QUEUE'
          value: smsQueueName
        }
        {
          name: 'CALL_QUEUE'
          value: callQueueName
        }
        {
          name: 'INBOUND_QUEUE'
          value: inboundQueueName
        }
        {
          name: 'OUTCOMES_QUEUE'
          value: outcomesQueueName
        }
        {
          name: 'VOICE_GREETING'
          value: voiceGreeting
        }
        {
          name: 'SMS_AUTO_REPLY'
          value: smsAutoReply
        }
        {
          name: 'FORWARD_TO_NUMBER'
          value: forwardToNumber
        }
        {
          // The phone menu and SMS keyword file, shipped with the package (README, Phone menus and keywords).
          name: 'FLOWS_FILE'
          value: 'flows.json'
        }
        {
          name: 'SECRET_CACHE_SECONDS'
          value: vaultCacheSeconds
        }
        {
          name: 'TWILIO_HTTP_TIMEOUT_SECONDS'
          value: twilioHttpTimeoutSeconds
        }
        {
          name: 'RECONCILE_SETTLE_SECONDS'
          value: reconcileSettleSeconds
        }
        {
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: pythonThreadpoolThreadCount
        }
        {
          name: 'ALLOWED_DESTINATIONS'
          value: allowedDestinations
        }
        {
          name: 'MAX_SENDS_PER_RECIPIENT_PER_HOUR'
          value: maxSendsPerRecipientPerHour
        }
        {
          name: 'MAX_SENDS_PER_HOUR'
          value: maxSendsPerHour
        }
        {
          name: 'AUTO_REPLY_MIN_INTERVAL_SECONDS'
          value: autoReplyMinIntervalSeconds
        }
        {
          name: 'PACING'
          value: pacing
        }
        {
          name: 'SENDER_RATES'
          value: senderRates
        }
        {
          name: 'PACING_LEAD_SECONDS'
          value: pacingLeadSeconds
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        // Beside PYTHON_THREADPOOL_THREAD_COUNT (the threads those sync HTTP functions run on): see main.bicep.
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// azd deploys Flex apps with Entra ID tokens; basic (publishing-profile) auth is not needed.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
output hostName string = app.properties.defaultHostName
