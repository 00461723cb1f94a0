// Azure Monitor workbook "switchboard operations" on Application Insights: sends by outcome over time, Twilio
// delivery statuses, dead letters by reason, webhook latency percentiles. Its KQL reads the app's log lines by
// field with `parse` (format pinned by tests/unit/test_outcome_log_format.py; every query parsed and bound with
// Microsoft's Kusto parser by tests/infra/test_kql.py). The sms/call field is `channel`: `kind` is reserved in KQL.
param location string
param tags object
param appInsightsId string

@description('Workbook name; a GUID, as Azure requires.')
param workbookId string = guid(resourceGroup().id, 'switchboard-operations-workbook')

var outcomeLogs = 'traces | where message startswith "outbound " and message has " outcome=" | parse message with "outbound " channel " id=" id " to=" to " outcome=" outcome " " detail | extend reason = iff(outcome == "dead_lettered", tostring(split(detail, ":")[0]), "")'
var statusLogs = 'traces | where message startswith "status " | parse message with "status " channel " id=" id " to=" to " twilio=" twilio_status " row=" row_status'
var webhookNames = '"voice", "voice_menu", "voice_node", "voice_recorded", "twiml_say", "sms", "status_message", "status_call", "status_amd", "status_recording", "health"'

var content = {
  version: 'Notebook/1.0'
  isLocked: false
  fallbackResourceIds: [
    appInsightsId
  ]
  items: [
    {
      type: 1
      name: 'title'
      content: {
        json: '## switchboard operations\nSends, delivery statuses, dead letters and webhook latency. Act on dead letters with `python -m shared.ops poison list`.'
      }
    }
    {
      type: 3
      name: 'sends-by-outcome'
      content: {
        version: 'KqlItem/1.0'
        title: 'Sends by outcome'
        query: '${outcomeLogs} | summarize sends = count() by outcome, bin(timestamp, 15m) | render timechart'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: {
          durationMs: 86400000
        }
      }
    }
    {
      type: 3
      name: 'twilio-delivery-statuses'
      content: {
        version: 'KqlItem/1.0'
        title: 'Twilio delivery statuses (status callbacks)'
        query: '${statusLogs} | summarize callbacks = count() by channel, twilio_status | order by callbacks desc'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'barchart'
        timeContext: {
          durationMs: 86400000
        }
      }
    }
    {
      type: 3
      name: 'dead-letters-by-reason'
      content: {
        version: 'KqlItem/1.0'
        title: 'Dead letters by reason'
        query: '${outcomeLogs} | where outcome == "dead_lettered" | summarize dead_letters = count() by reason | order by dead_letters desc'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'piechart'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
    {
      type: 3
      name: 'webhook-latency'
      content: {
        version: 'KqlItem/1.0'
        title: 'Webhook latency percentiles (ms)'
        query: 'requests | where name in (${webhookNames}) | summarize percentiles(duration, 50, 95, 99) by bin(timestamp, 15m) | render timechart'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: {
          durationMs: 86400000
        }
      }
    }
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: workbookId
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'switchboard operations'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(content)
  }
}

output id string = workbook.id
