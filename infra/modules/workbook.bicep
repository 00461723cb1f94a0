// Azure Monitor workbook "switchboard operations" on Application Insights: sends by outcome over time, dead letters
// by reason and per message, reconciliation verdicts, Twilio latency, webhook rejections and latency, pacing
// deferrals, Twilio delivery statuses. Counts come from the app's OpenTelemetry metrics in customMetrics
// (shared/telemetry.py; counters are exported as deltas, so sum(valueSum) is the count): cheaper than parsing every
// trace, and unsampled. What a metric must not carry (send ids, detail, Twilio statuses per id) comes from the
// app's log lines by field with `parse` (format pinned by tests/unit/test_outcome_log_format.py). Every query is
// parsed and bound with Microsoft's Kusto parser by tests/infra/test_kql.py. The sms/call field is `channel`:
// `kind` is reserved in KQL.
param location string
param tags object
param appInsightsId string

@description('Workbook name; a GUID, as Azure requires.')
param workbookId string = guid(resourceGroup().id, 'switchboard-operations-workbook')

var outcomeLogs = 'traces | where message startswith "outbound " and message has " outcome=" | parse message with "outbound " channel " id=" id " to=" to " outcome=" outcome " " detail | extend reason = iff(outcome == "dead_lettered", tostring(split(detail, ":")[0]), "")'
var statusLogs = 'traces | where message startswith "status " | parse message with "status " channel " id=" id " to=" to " twilio=" twilio_status " row=" row_status'
var metric = 'customMetrics | where name == '
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
        json: '## switchboard operations\nSends, dead letters, reconciliations, Twilio latency, webhook rejections and latency, pacing, delivery statuses. Counts are the app\'s metrics (customMetrics, README: Telemetry and metrics). Act on dead letters with `python -m shared.ops poison list`.'
      }
    }
    {
      type: 3
      name: 'sends-by-outcome'
      content: {
        version: 'KqlItem/1.0'
        title: 'Sends by outcome'
        query: '${metric}"switchboard.sends" | extend outcome = tostring(customDimensions.outcome) | summarize sends = sum(valueSum) by outcome, bin(timestamp, 15m) | render timechart'
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
        query: '${metric}"switchboard.dead_letters" | extend reason = tostring(customDimensions.reason) | summarize dead_letters = sum(valueSum) by reason | order by dead_letters desc'
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
      name: 'dead-letters-per-message'
      content: {
        version: 'KqlItem/1.0'
        title: 'Dead letters (per message)'
        query: '${outcomeLogs} | where outcome == "dead_lettered" | project timestamp, channel, id, reason, detail | order by timestamp desc'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
    {
      type: 3
      name: 'reconciliations'
      content: {
        version: 'KqlItem/1.0'
        title: 'Reconciliations of in-doubt sends by verdict'
        query: '${metric}"switchboard.reconciliations" | extend verdict = tostring(customDimensions.verdict), channel = tostring(customDimensions.channel) | summarize reconciliations = sum(valueSum) by verdict, channel | order by reconciliations desc'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'barchart'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
    {
      type: 3
      name: 'twilio-latency'
      content: {
        version: 'KqlItem/1.0'
        title: 'Twilio call duration by operation (s)'
        query: '${metric}"switchboard.twilio.duration" | extend operation = tostring(customDimensions.operation) | summarize calls = sum(valueCount), mean_s = sum(valueSum) / sum(valueCount), max_s = max(valueMax) by operation, bin(timestamp, 15m) | render timechart'
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
    {
      type: 3
      name: 'webhook-rejections'
      content: {
        version: 'KqlItem/1.0'
        title: 'Webhook rejections by reason and route'
        query: '${metric}"switchboard.webhook.rejections" | extend reason = tostring(customDimensions.reason), route = tostring(customDimensions.route) | summarize rejections = sum(valueSum) by reason, route | order by rejections desc'
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
      name: 'pacing-deferrals'
      content: {
        version: 'KqlItem/1.0'
        title: 'Pacing deferrals by priority and reason'
        query: '${metric}"switchboard.pacing.deferrals" | extend priority = tostring(customDimensions.priority), reason = tostring(customDimensions.reason) | summarize deferrals = sum(valueSum) by priority, reason, bin(timestamp, 15m) | render timechart'
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
