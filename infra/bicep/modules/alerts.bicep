// SLO and model-drift alerts: Azure Monitor log search alerts (scheduledQueryRules) over what the
// app's OpenTelemetry exporters send to Application Insights (pipeline/observability/metrics.py,
// pipeline/observability/telemetry.py). The rules are scoped to the Log Analytics workspace behind the
// workspace-based Application Insights resource, so their Kusto uses the workspace schema:
// AppMetrics (Name, Sum, ItemCount, Properties, AppRoleName) for customMetrics and
// AppDependencies (Properties = customDimensions) for the step spans. Every query returns one
// row per breach (per queue, per capability), and a rule fires when it returns any: thresholds
// live in the Kusto, as text, because Bicep has no decimal numbers.
//
// The first provision: the workspace is created in the same deployment and makes AppMetrics and
// AppDependencies only when the first record arrives, but creating a log search alert validates
// its query against the workspace ("Failed to resolve table or column expression named
// 'AppMetrics'"). So the rules set skipQueryValidation (scheduledQueryRules 2023-12-01: "whether
// the provided query should be validated or not") AND every query reads the tables through
// `union isfuzzy=true` with an empty datatable of the columns it uses: a fuzzy union fails only
// when none of its legs resolves, so a query over a table that does not exist yet runs, returns
// no row, and fires nothing; once the exporter's first record lands it reads the real table.

param location string
param tags object = {}
@description('The Log Analytics workspace Application Insights writes to (the rules query it).')
param workspaceId string
@description('Name prefix of the rules and the action group.')
param namePrefix string
@description('E-mail address alerts are sent to; empty: no action group, the alerts only show in the portal.')
param alertEmail string = ''
@description('Application Insights cloud role of the app: the service.name of its telemetry.')
param roleName string = 'darkroom'

@description('Success rate SLO: done / (done + failed) over an hour, e.g. 0.99 (rejected images are the uploader\'s, not the pipeline\'s).')
param successRateTarget string = '0.99'
@description('End-to-end latency SLO: p95 of ingest to done over an hour, in milliseconds (fresh uploads and the sync path; backfill excluded).')
param p95LatencyMs int = 120000
@description('Age of the oldest visible message in a step queue, in seconds, before it alerts (a backlog or a stuck listener).')
param queueAgeSeconds int = 900
@description('Fewer images than this in the hour: no verdict on the success rate or p95 (too few to judge).')
param sloMinImages int = 20

// Model drift: the same defaults as pipeline/settings.py DriftSettings (tests/test_infra.py checks).
@description('Latest window of the drift check, hours; the baseline is the rest of the 48 h a log alert may query.')
@minValue(1)
@maxValue(24)
param driftWindowHours int = 12
@description('Population stability index of a score distribution that counts as drift (DARKROOM_DRIFT_PSI_THRESHOLD).')
param driftPsiThreshold string = '0.2'
@description('Absolute change in the share of images with a finding that counts as drift (DARKROOM_DRIFT_SHARE_THRESHOLD).')
param driftShareThreshold string = '0.15'
@description('Error rate of a capability in the latest window that counts as drift (DARKROOM_DRIFT_ERROR_RATE_THRESHOLD).')
param driftErrorRateThreshold string = '0.05'
@description('Images (and scores) each window needs before a verdict (DARKROOM_DRIFT_MIN_IMAGES).')
param driftMinImages int = 30

// 48 h: the longest range a log search alert queries (its window size, P2D).
var driftRangeHours = 48
var driftBaselineHours = driftRangeHours - driftWindowHours

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'darkroom'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = {
  actionGroups: empty(alertEmail) ? [] : [actionGroup.id]
}

// The two workspace tables the queries read, as `let` statements every query starts with (see
// the top of this file): each names the columns the queries use, with the workspace types.
var tables = '''
let Metrics = union isfuzzy=true (datatable(TimeGenerated: datetime, AppRoleName: string, Name: string, Sum: real, Properties: dynamic)[]), AppMetrics;
let Dependencies = union isfuzzy=true (datatable(TimeGenerated: datetime, AppRoleName: string, Properties: dynamic)[]), AppDependencies;
'''

var successRateQuery = format('''
Metrics
| where AppRoleName == "{0}" and Name == "darkroom.images"
| extend status = tostring(Properties["darkroom.status"])
| summarize done = sumif(Sum, status == "done"), failed = sumif(Sum, status == "failed")
| where done + failed >= {1}
| extend successRate = done / (done + failed)
| where successRate < {2}
''', roleName, sloMinImages, successRateTarget)

var latencyQuery = format('''
Dependencies
| where AppRoleName == "{0}" and isnotempty(Properties["darkroom.image.total_ms"])
| where tostring(Properties["darkroom.outcome"]) == "done" and tostring(Properties["darkroom.lane"]) != "backfill"
| summarize p95 = percentile(todouble(Properties["darkroom.image.total_ms"]), 95), images = count()
| where images >= {1} and p95 > {2}
''', roleName, sloMinImages, p95LatencyMs)

var queueAgeQuery = format('''
Metrics
| where AppRoleName == "{0}" and Name == "darkroom.queue.oldest_age"
| where tostring(Properties["darkroom.queue.kind"]) == "step"
| summarize age = max(Sum) by queue = tostring(Properties["darkroom.queue"])
| where age > {1}
''', roleName, queueAgeSeconds)

// pipeline/observability/drift.py in Kusto: the latest window against the baseline before it, per capability.
// PSI = sum over bins of (c - b) * ln(c / b), shares floored at 0.0001 (drift.EPSILON), computed
// only when both windows hold at least the minimum of scores; the share of images with a finding
// (moderation: unsafe) among those answered; the latest window's error rate.
var driftQuery = format('''
let window = {1}h;
let baseline = {2}h;
let minImages = {3};
let epsilon = 0.0001;
let data = Metrics
    | where AppRoleName == "{0}" and TimeGenerated > ago(window + baseline)
    | extend period = iff(TimeGenerated > ago(window), "current", "baseline"),
        capability = tostring(Properties["darkroom.capability"]);
let scores = data
    | where Name == "darkroom.analysis.scores"
    | extend bin = tostring(Properties["darkroom.score.bin"])
    | summarize n = sum(Sum) by capability, period, bin
    | join kind=inner (data | where Name == "darkroom.analysis.scores" | summarize total = sum(Sum) by capability, period) on capability, period
    | where total >= minImages
    | extend share = n / total;
let psi = scores | where period == "current" | project capability, bin, c = share
    | join kind=fullouter (scores | where period == "baseline" | project capability, bin, b = share) on capability, bin
    | extend inCurrent = isnotempty(capability), inBaseline = isnotempty(capability1),
        capability = coalesce(capability, capability1),
        c = max_of(coalesce(c, 0.0), epsilon), b = max_of(coalesce(b, 0.0), epsilon)
    | summarize psi = sum((c - b) * log(c / b)), currentBins = countif(inCurrent), baselineBins = countif(inBaseline) by capability
    | where currentBins > 0 and baselineBins > 0;
let outcomes = data
    | where Name == "darkroom.analysis.outcomes"
    | extend outcome = tostring(Properties["darkroom.analysis.outcome"])
    | summarize images = sum(Sum), errors = sumif(Sum, outcome == "error"),
        positives = sumif(Sum, outcome == iff(capability == "moderation", "unsafe", "found")) by capability, period
    | extend answered = images - errors
    | extend share = iff(answered > 0, positives / answered, real(null)), errorRate = errors / images;
outcomes | where period == "current" | project capability, images, share, errorRate, errors
| join kind=inner (outcomes | where period == "baseline" | project capability, baselineImages = images, baselineShare = share) on capability
| join kind=leftouter psi on capability
| where images >= minImages and baselineImages >= minImages
| extend shareChange = share - baselineShare
| where psi >= {4} or abs(shareChange) >= {5} or (errors > 0 and errorRate >= {6})
| project capability, psi, shareChange, errorRate, images, baselineImages
''', roleName, driftWindowHours, driftBaselineHours, driftMinImages, driftPsiThreshold, driftShareThreshold, driftErrorRateThreshold)

var rules = [
  {
    name: 'success-rate'
    displayName: 'Darkroom: image success rate below ${successRateTarget}'
    description: 'Images that ended done among those that ended done or failed, over the last hour (darkroom.images).'
    severity: 1
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    query: successRateQuery
    dimensions: []
  }
  {
    name: 'latency-p95'
    displayName: 'Darkroom: end-to-end p95 above ${p95LatencyMs} ms'
    description: 'p95 of ingest to done (darkroom.image.total_ms on the span of the step that ended the image), last hour.'
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    query: latencyQuery
    dimensions: []
  }
  {
    name: 'queue-age'
    displayName: 'Darkroom: a queue\'s oldest message older than ${queueAgeSeconds} s'
    description: 'darkroom.queue.oldest_age of a step queue (live or backfill lane), per queue.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: queueAgeQuery
    dimensions: [
      {
        name: 'queue'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'model-drift'
    displayName: 'Darkroom: analyzer output drifted'
    description: 'Per capability, the last ${driftWindowHours} h against the ${driftBaselineHours} h before: score PSI, share of findings, error rate (pipeline/observability/drift.py; python -m pipeline status).'
    severity: 3
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    query: driftQuery
    dimensions: [
      {
        name: 'capability'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: 'alert-${namePrefix}-${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        workspaceId
      ]
      evaluationFrequency: rule.evaluationFrequency
      windowSize: rule.windowSize
      criteria: {
        allOf: [
          {
            query: '${tables}${rule.query}'
            timeAggregation: 'Count'
            dimensions: rule.dimensions
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
      // the tables may not exist yet on the first provision (see the top of this file)
      skipQueryValidation: true
      actions: actions
    }
  }
]

output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
