// Sets PUBLIC_BASE_URL to https://<the app's defaultHostName> once the site exists. The site's own siteConfig
// cannot reference its defaultHostName (a cycle), and a Flex app's host name is Azure's to choose.
// `appsettings` is replaced as a whole, so the current settings are read back and only PUBLIC_BASE_URL changes.
param appName string
param publicBaseUrl string

resource app 'Microsoft.Web/sites@2024-11-01' existing = {
  name: appName
}

resource settings 'Microsoft.Web/sites/config@2024-11-01' = {
  // checkov:skip=CKV_AZURE_13: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_63: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_65: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_66: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_80: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_88: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  // checkov:skip=CKV_AZURE_222: this is the appsettings config resource (name appsettings), not the site's web config that the check reads; the site itself is checked in functionapp.bicep
  parent: app
  name: 'appsettings'
  properties: union(list('${app.id}/config/appsettings', '2024-11-01').properties, {
    PUBLIC_BASE_URL: publicBaseUrl
  })
}

output publicBaseUrl string = publicBaseUrl
