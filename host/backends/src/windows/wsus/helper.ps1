# medic's WSUS helper, for Windows PowerShell 5.1 (powershell.exe).
# Reads one JSON request per line on stdin, writes one JSON reply per line
# on stdout. Arguments are data: nothing read is ever run as script text.
# Comment lines are removed before the script is passed to PowerShell.
$ErrorActionPreference = 'Stop'
$utf8 = New-Object System.Text.UTF8Encoding $false
[Console]::InputEncoding = $utf8
[Console]::OutputEncoding = $utf8
$stdin = New-Object System.IO.StreamReader ([Console]::OpenStandardInput()), $utf8
$stdout = New-Object System.IO.StreamWriter ([Console]::OpenStandardOutput()), $utf8
function Send($reply) {
    $stdout.WriteLine((ConvertTo-Json -InputObject $reply -Compress -Depth 8))
    $stdout.Flush()
}
function ErrorOf($e) {
    while (($e -is [System.Management.Automation.MethodInvocationException] -or $e -is [System.Management.Automation.RuntimeException]) -and $e.InnerException) { $e = $e.InnerException }
    @{ type = $e.GetType().FullName; message = $e.Message }
}
try {
    [void][Reflection.Assembly]::LoadWithPartialName('Microsoft.UpdateServices.Administration')
    $server = [Microsoft.UpdateServices.Administration.AdminProxy]::GetUpdateServer()
} catch {
    Send @{ ready = $false; error = (ErrorOf $_.Exception) }
    exit 1
}
# The settings medic may read, and those it may write.
$Readable = @('BitsDownloadPriorityForeground','DownloadExpressPackages','HostBinariesOnMicrosoftUpdate','SyncFromMicrosoftUpdate','IsReplicaServer','UpstreamWsusServerName','UpstreamWsusServerPortNumber','UseProxy','ProxyName','ProxyServerPort','ProxyUserName','ProxyUserDomain','HasProxyPassword')
$Writable = @('BitsDownloadPriorityForeground','DownloadExpressPackages','HostBinariesOnMicrosoftUpdate','UpstreamWsusServerName','UpstreamWsusServerPortNumber','UseProxy','ProxyName','ProxyServerPort','ProxyUserName','ProxyUserDomain')
$Upstreams = @{}
# The API's times are UTC ("in Coordinated Universal Time"), though read
# from SQL they may carry no kind: such a time is taken as UTC, not local.
function Ms($date) {
    if ($null -eq $date -or $date -eq [DateTime]::MinValue) { return [long]0 }
    if ($date.Kind -eq [DateTimeKind]::Unspecified) { $date = [DateTime]::SpecifyKind($date, [DateTimeKind]::Utc) }
    [long]([DateTimeOffset]::new($date.ToUniversalTime())).ToUnixTimeMilliseconds()
}
function Upstream($u) {
    $key = '{0}:{1}:{2}' -f $u.name, $u.port, $u.ssl
    if (-not $Upstreams.ContainsKey($key)) {
        $Upstreams[$key] = [Microsoft.UpdateServices.Administration.AdminProxy]::GetUpdateServer([string]$u.name, [bool]$u.ssl, [int]$u.port)
    }
    $Upstreams[$key]
}
function UpdateById($on, $id) {
    $on.GetUpdate([Microsoft.UpdateServices.Administration.UpdateRevisionId]::new([Guid][string]$id))
}
function IsNotFound($e) { (ErrorOf $e).type -like '*WsusObjectNotFoundException' }
function UpdateView($u) {
    @{ id = $u.Id.UpdateId.ToString(); revision = [int]$u.Id.RevisionNumber; title = [string]$u.Title
       products = @($u.ProductTitles | ForEach-Object { [string]$_ }); classification = [string]$u.UpdateClassificationTitle
       state = $u.State.ToString(); declined = [bool]$u.IsDeclined; approved = [bool]$u.IsApproved }
}
function SyncView($info) {
    if ($null -eq $info -or $info.Result.ToString() -eq 'NeverRun') { return $null }
    @{ started_ms = (Ms $info.StartTime); finished_ms = (Ms $info.EndTime); result = $info.Result.ToString()
       error = $info.Error.ToString(); error_text = [string]$info.ErrorText }
}
function ApprovedCount($on) {
    $scope = New-Object Microsoft.UpdateServices.Administration.UpdateScope
    $scope.ApprovedStates = [Microsoft.UpdateServices.Administration.ApprovedStates]'LatestRevisionApproved, HasStaleUpdateApprovals'
    [int]$on.GetUpdateCount($scope)
}
function ForEachUpdate($a, [scriptblock]$change) {
    $results = @()
    foreach ($id in @($a.ids)) {
        try {
            $u = UpdateById $server $id
            & $change $u
            $u.Refresh()
            $results += @{ id = [string]$id; state = $u.State.ToString(); declined = [bool]$u.IsDeclined }
        } catch {
            $results += @{ id = [string]$id; error = (ErrorOf $_.Exception) }
        }
    }
    @{ results = $results }
}
function CheckProperty($name, $allowed) {
    if ($allowed -notcontains [string]$name) { throw (New-Object System.ArgumentException ("medic does not touch the setting " + $name)) }
}
$Handlers = @{
    'server-info' = { param($a)
        $c = $server.GetConfiguration()
        @{ name = [string]$server.Name; version = $server.Version.ToString(); is_replica = [bool]$c.IsReplicaServer
           sync_from_microsoft_update = [bool]$c.SyncFromMicrosoftUpdate; upstream_name = [string]$c.UpstreamWsusServerName
           upstream_port = [int]$c.UpstreamWsusServerPortNumber; upstream_ssl = [bool]$c.UpstreamWsusServerUseSsl
           host_binaries_on_microsoft_update = [bool]$c.HostBinariesOnMicrosoftUpdate
           all_languages = [bool]$c.AllUpdateLanguagesEnabled; languages = @($c.GetEnabledUpdateLanguages() | ForEach-Object { [string]$_ }) } }
    'list-updates' = { param($a)
        $list = $server.GetUpdates() | Where-Object {
            ($null -eq $a.state -or $_.State.ToString() -eq [string]$a.state) -and
            ($null -eq $a.declined -or [bool]$_.IsDeclined -eq [bool]$a.declined) -and
            ($null -eq $a.approved -or [bool]$_.IsApproved -eq [bool]$a.approved) }
        @{ updates = @($list | ForEach-Object { UpdateView $_ }) } }
    'get-updates' = { param($a)
        $found = @(); $missing = @()
        foreach ($id in @($a.ids)) {
            try { $found += (UpdateView (UpdateById $server $id)) }
            catch { if (IsNotFound $_.Exception) { $missing += [string]$id } else { throw } }
        }
        @{ updates = $found; missing = $missing } }
    'upstream-has' = { param($a)
        $up = Upstream $a.upstream; $present = @()
        foreach ($id in @($a.ids)) {
            try { [void](UpdateById $up $id); $present += [string]$id }
            catch { if (-not (IsNotFound $_.Exception)) { throw } }
        }
        @{ present = $present } }
    'cancel-downloads' = { param($a) ForEachUpdate $a { param($u) $u.CancelDownload() } }
    'resume-downloads' = { param($a) ForEachUpdate $a { param($u) $u.ResumeDownload() } }
    'decline' = { param($a) ForEachUpdate $a { param($u) $u.Decline() } }
    'approved-count' = { param($a)
        $on = $server; if ($null -ne $a.upstream) { $on = Upstream $a.upstream }
        @{ approved = (ApprovedCount $on) } }
    'upstream-info' = { param($a)
        $up = Upstream $a.upstream; $c = $up.GetConfiguration()
        @{ host_binaries_on_microsoft_update = [bool]$c.HostBinariesOnMicrosoftUpdate; all_languages = [bool]$c.AllUpdateLanguagesEnabled
           languages = @($c.GetEnabledUpdateLanguages() | ForEach-Object { [string]$_ }); approved = (ApprovedCount $up) } }
    'get-config' = { param($a)
        $c = $server.GetConfiguration(); $values = @{}
        foreach ($p in @($a.properties)) { CheckProperty $p $Readable; $values[[string]$p] = $c.([string]$p) }
        @{ values = $values } }
    'set-config' = { param($a)
        $c = $server.GetConfiguration()
        foreach ($change in @($a.changes)) { CheckProperty $change.property $Writable }
        foreach ($change in @($a.changes)) { $c.([string]$change.property) = $change.value }
        $c.Save()
        $c = $server.GetConfiguration(); $values = @{}
        foreach ($change in @($a.changes)) { $values[[string]$change.property] = $c.([string]$change.property) }
        @{ values = $values } }
    'start-sync' = { param($a)
        $sub = $server.GetSubscription()
        if ($sub.GetSynchronizationStatus().ToString() -eq 'Running') {
            throw (New-Object System.InvalidOperationException 'a synchronization is already running')
        }
        $sub.StartSynchronization()
        @{ started_ms = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() } }
    'sync-status' = { param($a)
        $sub = $server.GetSubscription()
        @{ running = ($sub.GetSynchronizationStatus().ToString() -eq 'Running'); last = (SyncView $sub.GetLastSynchronizationInfo()) } }
    'sync-history' = { param($a)
        $history = $server.GetSubscription().GetSynchronizationHistory() | Sort-Object -Property StartTime -Descending | Select-Object -First ([int]$a.limit)
        @{ history = @($history | ForEach-Object { SyncView $_ } | Where-Object { $null -ne $_ }) } }
    'proxy' = { param($a)
        $c = $server.GetConfiguration()
        @{ use_proxy = [bool]$c.UseProxy; proxy_name = [string]$c.ProxyName; proxy_port = [int]$c.ProxyServerPort
           user_name = [string]$c.ProxyUserName; user_domain = [string]$c.ProxyUserDomain; has_password = [bool]$c.HasProxyPassword } }
}
Send @{ ready = $true; version = $server.Version.ToString() }
while ($true) {
    $line = $stdin.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Trim() -eq '') { continue }
    $id = 0
    try {
        $request = ConvertFrom-Json -InputObject $line
        $id = [long]$request.id
        $handler = $Handlers[[string]$request.op]
        if ($null -eq $handler) { throw (New-Object System.ArgumentException ('unknown op ' + [string]$request.op)) }
        $result = & $handler $request.args
        Send @{ id = $id; ok = $true; result = $result }
    } catch {
        Send @{ id = $id; ok = $false; error = (ErrorOf $_.Exception) }
    }
}
