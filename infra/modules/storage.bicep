// The function app's storage account: host state (AzureWebJobsStorage__*), the Flex deployment container,
// the contract queues (+ -poison; the outcomes queue, which the app only writes, has none) and tables.
// Identity-only: shared keys are off.
param name string
param location string
param tags object
param deploymentContainerName string
param queueNames array
param tableNames array

// A zone-redundant Flex app needs zone-redundant host storage (ZRS); otherwise geo-redundant (main.bicep picks it
// from zoneRedundant). Only replicated SKUs are allowed.
@description('Storage SKU: Standard_ZRS when the function app is zone-redundant (Azure requires it), else Standard_GRS.')
@allowed([
  'Standard_GRS'
  'Standard_ZRS'
])
param skuName string = 'Standard_GRS'

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  // checkov:skip=CKV_AZURE_59: Flex Consumption without VNet integration reaches its storage over the public endpoint; access is Entra-only (allowSharedKeyAccess false)
  // checkov:skip=CKV_AZURE_35: a deny-by-default storage firewall would block the Flex Consumption app, which has no VNet integration here; access is Entra-only
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
