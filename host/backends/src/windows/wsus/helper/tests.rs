//! [`ProcessHelper`] against real child processes: small `sh` programs
//! that speak the helper's protocol and misbehave on request (hang, exit,
//! print garbage, answer the wrong request), so framing, timeouts, kills
//! and respawns are exercised for real. Unix only: the fakes are shell
//! scripts.

#![cfg(unix)]

use super::*;
use serde_json::json;
use std::sync::Arc;

/// A helper that says ready, then answers by op:
/// `echo` returns its args, `sleep` hangs, `exit` dies with a message,
/// `garbage` prints a line that is not JSON, `wrong-id` answers another
/// request, `throw` returns a .NET exception, `long` prints a long line.
const FAKE: &str = r#"
printf '\357\273\277{"ready":true}\r\n'
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
  args=$(printf '%s' "$line" | sed -n 's/.*"args":\(.*\)}$/\1/p')
  case "$line" in
    *'"op":"echo"'*) printf '{"id":%s,"ok":true,"result":%s}\n' "$id" "$args" ;;
    *'"op":"sleep"'*) exec sleep 30 ;;
    *'"op":"exit"'*) echo "the helper died: out of cheese" >&2; exit 3 ;;
    *'"op":"garbage"'*) echo 'Get-WsusServer : The term is not recognized' ;;
    *'"op":"wrong-id"'*) printf '{"id":999,"ok":true,"result":null}\n' ;;
    *'"op":"throw"'*) printf '{"id":%s,"ok":false,"error":{"type":"System.InvalidOperationException","message":"This operation is not allowed on a replica server."}}\n' "$id" ;;
    *'"op":"long"'*) head -c 5000 /dev/zero | tr '\0' 'x'; echo ;;
  esac
done
"#;

fn helper(script: &str) -> ProcessHelper {
    ProcessHelper::new(
        HelperCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
        },
        Duration::from_secs(20),
    )
    .with_max_line(1000)
}

const LONG: Duration = Duration::from_secs(20);

fn echo(helper: &ProcessHelper, n: u64) {
    let result = helper
        .call("echo", json!({"n": n, "text": "a \"quoted\" word"}), LONG)
        .unwrap();
    assert_eq!(result, json!({"n": n, "text": "a \"quoted\" word"}));
}

#[test]
fn one_process_answers_many_requests_in_order() {
    let helper = helper(FAKE);
    for n in 0..20 {
        echo(&helper, n);
    }
    assert_eq!(helper.starts(), 1);
}

#[test]
fn a_hung_request_times_out_kills_the_helper_and_the_next_call_starts_afresh() {
    let helper = helper(FAKE);
    echo(&helper, 1);
    let began = Instant::now();
    let err = helper
        .call("sleep", json!({}), Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, HelperError::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(began.elapsed() < Duration::from_secs(10));
    echo(&helper, 2);
    assert_eq!(helper.starts(), 2);
}

#[test]
fn an_exit_garbage_a_wrong_id_or_a_long_line_fail_the_call_and_respawn() {
    let helper = helper(FAKE);
    let err = helper.call("exit", json!({}), LONG).unwrap_err();
    assert!(matches!(err, HelperError::Exited { .. }), "{err}");
    assert!(err.to_string().contains("out of cheese"), "{err}");
    echo(&helper, 1);
    let err = helper.call("garbage", json!({}), LONG).unwrap_err();
    assert!(matches!(err, HelperError::Garbage { .. }), "{err}");
    assert!(err.to_string().contains("not recognized"), "{err}");
    echo(&helper, 2);
    let err = helper.call("wrong-id", json!({}), LONG).unwrap_err();
    assert!(err.to_string().contains("request 999"), "{err}");
    echo(&helper, 3);
    let err = helper.call("long", json!({}), LONG).unwrap_err();
    assert!(err.to_string().contains("longer than 1000 bytes"), "{err}");
    echo(&helper, 4);
    assert_eq!(helper.starts(), 5);
}

#[test]
fn a_dotnet_exception_maps_to_its_kind_and_keeps_the_helper() {
    let helper = helper(FAKE);
    let err = helper.call("throw", json!({}), LONG).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("replica server"), "{err}");
    echo(&helper, 1);
    assert_eq!(helper.starts(), 1);
    let backend: BackendError = err.into();
    assert_eq!(backend.kind, ErrorKind::Conflict);
}

#[test]
fn exception_types_map_to_kinds() {
    let table = [
        (
            "Microsoft.UpdateServices.Administration.WsusObjectNotFoundException",
            ErrorKind::NotFound,
        ),
        ("System.UnauthorizedAccessException", ErrorKind::Denied),
        ("System.Security.SecurityException", ErrorKind::Denied),
        ("System.InvalidOperationException", ErrorKind::Conflict),
        ("System.ArgumentException", ErrorKind::InvalidArgument),
        ("System.TimeoutException", ErrorKind::Timeout),
        ("System.Net.WebException", ErrorKind::Failed),
        ("System.Data.SqlClient.SqlException", ErrorKind::Failed),
    ];
    for (type_name, kind) in table {
        assert_eq!(exception_kind(type_name), kind, "{type_name}");
    }
}

#[test]
fn a_helper_that_cannot_load_wsus_is_unsupported() {
    let helper = helper(
        r#"printf '{"ready":false,"error":{"type":"System.IO.FileNotFoundException","message":"Could not load Microsoft.UpdateServices.Administration"}}\n'"#,
    );
    let err = helper.call("echo", json!({}), LONG).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("Could not load"), "{err}");

    let missing = ProcessHelper::new(
        HelperCommand {
            program: "/nonexistent/powershell.exe".into(),
            args: Vec::new(),
        },
        LONG,
    );
    let err = missing.call("echo", json!({}), LONG).unwrap_err();
    assert!(matches!(err, HelperError::Spawn { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unsupported);

    let silent = ProcessHelper::new(
        HelperCommand {
            program: "sh".into(),
            args: vec!["-c".into(), "exec sleep 30".into()],
        },
        Duration::from_millis(300),
    );
    let err = silent.call("echo", json!({}), LONG).unwrap_err();
    assert!(
        matches!(&err, HelperError::Timeout { op, .. } if op == "start"),
        "{err}"
    );
}

#[test]
fn failures_in_any_order_many_times_never_confuse_replies() {
    let helper = helper(FAKE);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for n in 0..60 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        match rng % 5 {
            0 => {
                let _ = helper.call("sleep", json!({}), Duration::from_millis(50));
            }
            1 => {
                let _ = helper.call("exit", json!({}), LONG);
            }
            2 => {
                let _ = helper.call("garbage", json!({}), LONG);
            }
            3 => {
                let _ = helper.call("throw", json!({}), LONG);
            }
            _ => {}
        }
        echo(&helper, n);
    }
}

#[test]
fn concurrent_callers_take_turns() {
    let helper = Arc::new(helper(FAKE));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let helper = helper.clone();
            std::thread::spawn(move || {
                for n in 0..15 {
                    echo(&helper, t * 100 + n);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(helper.starts(), 1);
}

#[test]
fn the_script_is_encoded_as_powershell_expects() {
    // `powershell -EncodedCommand` takes base64 of UTF-16LE.
    assert_eq!(encode_command("dir"), "ZABpAHIA");
    let command = HelperCommand::windows_powershell("Write-Output 1");
    assert!(
        command
            .program
            .ends_with("WindowsPowerShell/v1.0/powershell.exe")
    );
    assert!(command.args.iter().any(|a| a == "-NonInteractive"));
}
