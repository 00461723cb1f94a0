// Alerts for operators (README, Operations): an action group mailing emailAddresses, five log alerts on
// Application Insights, and the Key Vault's SecretNearExpiry / SecretExpired events raised as Azure Monitor alerts.
// Where a count is all an alert needs, it reads the app's OpenTelemetry metrics (shared/telemetry.py) from
// customMetrics: a few pre-aggregated rows per minute instead of a string scan of every trace, and never sampled.
// Where it needs what a metric must not carry (a send id), it reads the ledger's log lines by field (the double
// send alert; the workbook parses the outcome lines, shared/sender.py `_log`, pinned by
// tests/unit/test_outcome_log_format.py). Azure validates a rule's query when it creates the rule, so every query here must parse and bind:
// tests/infra/test_kql.py runs each through Microsoft's Kusto parser. The sms/call field is `channel`, never `kind`
// (a reserved word: the parser rejects `parse ... with ... kind ...`).
param namePrefix string
param location string
param tags object
param appInsightsId string
param keyVaultName string

@description('E-mail addresses of the action group (empty = none).')
param emailAddresses array = []

@description('Failed function executions in 5 minutes that raise the function-failures alert.')
@minValue(1)
param functionFailureThreshold int = 5

@description('Percent of webhook requests answered 5xx in 5 minutes that raises the webhook alert.')
param webhook5xxPercent int = 5

// Dead letters counted by the switchboard.dead_letters metric (the per-message lines, with ids, are the workbook's
// "Dead letters (per message)" and `python -m shared.ops poison list`).
var deadLetterQuery = 'customMetrics | where name == "switchboard.dead_letters" | extend reason = tostring(customDimensions.reason), channel = tostring(customDimensions.channel) | summarize dead_letters = sum(valueSum) by reason, channel'
// MAX_SENDS_PER_HOUR spent: sends are deferred to the next hour (shared/sender.py `_defer_for_budget`), not lost;
// each one counts in switchboard.pacing.deferrals with reason budget_exhausted.
var budgetDeferredQuery = 'customMetrics | where name == "switchboard.pacing.deferrals" | where tostring(customDimensions.reason) == "budget_exhausted" | summarize deferred = sum(valueSum)'
// A second SID for one id (shared/ledger.py `_flag_double_send`), or a callback naming another id's SID.
var doubleSendQuery = 'traces | where message startswith "ledger: double_send " or message startswith "ledger: sid_mismatch " | parse message with "ledger: " event " " channel " " rest | project timestamp, event, channel, rest'
var webhook5xxQuery = 'requests | where name !in ("send_sms", "place_call") | summarize total = count(), failed = countif(toint(resultCode) >= 500) | extend percent5xx = iff(total == 0, 0.0, 100.0 * failed / total)'
var functionFailureQuery = 'requests | where success == false | project timestamp, name, resultCode, operation_Id'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'switchboard'
    enabled: true
    emailReceivers: [for (address, i) in emailAddresses: {
      name: 'email-${i}'
      emailAddress: trim(address)
      useCommonAlertSchema: true
    }]
  }
}

resource deadLetters 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-dead-letters-${namePrefix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'switchboard: sends dead-lettered'
    description: 'A queue message ended in <queue>-poison in the last 5 minutes. See: python -m shared.ops poison list'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: deadLetterQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'dead_letters'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'reason'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource budgetDeferred 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-budget-deferred-${namePrefix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'switchboard: hourly send budget spent'
    description: 'MAX_SENDS_PER_HOUR was reached: sends are being deferred to the next hour (README, Guardrails). A runaway producer, or a budget set too low.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: budgetDeferredQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'deferred'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource doubleSend 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-double-send-${namePrefix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'switchboard: a message was sent twice'
    description: 'Twilio reported a second message for one send id (a list that lagged past RECONCILE_SETTLE_SECONDS), or a status callback named another send\'s SID. ops sends show ID lists every SID (README, Exactly once).'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: doubleSendQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'event'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource webhook5xx 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-webhook-5xx-${namePrefix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'switchboard: webhook 5xx rate'
    description: 'More than ${webhook5xxPercent}% of webhook requests answered 5xx in 5 minutes: Twilio retries, then gives up.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: webhook5xxQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'percent5xx'
          operator: 'GreaterThan'
          threshold: webhook5xxPercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource functionFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-function-failures-${namePrefix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'switchboard: function failures'
    description: 'Function executions failed (unhandled errors or retries) in the last 5 minutes.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: functionFailureQuery
          timeAggregation: 'Count'
          operator: 'GreaterThanOrEqual'
          threshold: functionFailureThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Key Vault publishes SecretNearExpiry 30 days before a secret's `exp` (set by keyvault.bicep) and SecretExpired.
resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource vaultEvents 'Microsoft.EventGrid/systemTopics@2023-12-15-preview' = {
  name: 'evgt-${namePrefix}'
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource secretExpiry 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2023-12-15-preview' = {
  parent: vaultEvents
  name: 'twilio-secret-expiry'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'MonitorAlert'
      properties: {
        severity: 'Sev2'
        description: 'A Twilio secret in Key Vault expires soon (or has expired): rotate it (README, Deploy step 2).'
        actionGroups: [
          actionGroup.id
        ]
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
      ]
    }
  }
}

output actionGroupId string = actionGroup.id
output alertIds array = [
  deadLetters.id
  budgetDeferred.id
  webhook5xx.id
  functionFailures.id
]
