//! `fwlb check -c FILE` on the real binary: one test per kind of mistake, each asserting the
//! exact `FILE:LINE:COL:` of every message (1-based, columns in characters), plus the shipped
//! example `conf/fwlb.toml` and the example of the design document.
//!
//! Locations: an unknown key points at the key, a bad value at the value (or at the array
//! element), a missing key at the first key of its table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fwlb");

/// What one `fwlb check` run printed.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_path(path: &Path) -> Checked {
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run fwlb check");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// Write `src` to a temporary file and check it; the file lives as long as the result.
fn check_src(src: &str) -> (Checked, tempfile::NamedTempFile) {
    let mut f = tempfile::Builder::new()
        .prefix("fwlb-")
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(src.as_bytes()).expect("write config");
    f.flush().expect("flush config");
    (check_path(f.path()), f)
}

/// Check `src`, expect a failure, and return the error lines with their `FILE:` prefix (the
/// exact temporary path) removed, so they read `LINE:COL: message`.
fn errors(src: &str) -> Vec<String> {
    let (out, file) = check_src(src);
    let label = format!("{}:", file.path().display());
    assert_eq!(
        out.code,
        Some(1),
        "expected exit 1\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing on stdout when the file has errors");
    out.stderr
        .lines()
        .map(|l| {
            l.strip_prefix(&label)
                .unwrap_or_else(|| panic!("line does not start with {label:?}: {l:?}"))
                .to_string()
        })
        .collect()
}

/// Assert the exact list of errors: each is (`"LINE:COL"`, a part of its message), in order.
fn assert_errors(src: &str, want: &[(&str, &str)]) {
    let got = errors(src);
    let show = got.join("\n");
    assert_eq!(
        got.len(),
        want.len(),
        "expected {} error(s), got:\n{show}",
        want.len()
    );
    for (line, (at, part)) in got.iter().zip(want) {
        let prefix = format!("{at}: ");
        assert!(
            line.starts_with(&prefix),
            "expected an error at {at}, got {line:?}\nall errors:\n{show}"
        );
        assert!(
            line.contains(part),
            "expected {part:?} in {line:?}\nall errors:\n{show}"
        );
    }
}

fn assert_ok(out: &Checked) {
    assert_eq!(
        out.code,
        Some(0),
        "expected exit 0\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "configuration OK\n");
}

// ---- syntax and unknown keys ----

#[test]
fn toml_syntax_error() {
    assert_errors(
        r#"[daemon]
log = stderr
"#,
        &[("2:7", "TOML syntax error: string values must be quoted")],
    );
}

#[test]
fn toml_syntax_error_is_the_only_error_reported() {
    // Past a syntax error nothing else is validated; one line, not a cascade.
    assert_errors(
        r#"[daemon]
log = "file"

[[balancer]
listen = "8080"
"#,
        &[("4:12", "TOML syntax error")],
    );
}

#[test]
fn unknown_top_level_key() {
    assert_errors(
        r#"colour = "blue"
[daemon]
log = "stderr"

[vrrrp]
vrid = 1
"#,
        &[
            ("1:1", "unknown key `colour` in the top level"),
            (
                "5:2",
                "unknown key `vrrrp` in the top level (did you mean `vrrp`?)",
            ),
        ],
    );
}

#[test]
fn unknown_daemon_key_with_hint() {
    let e = errors(
        r#"[daemon]
control = "127.0.0.1:8888"
  shutdown_timout = "10s"
colour = "blue"
"#,
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0],
        "3:3: unknown key `shutdown_timout` in [daemon] (did you mean `shutdown_timeout`?)"
    );
    assert_eq!(
        e[1], "4:1: unknown key `colour` in [daemon]",
        "no hint when nothing is close"
    );
}

#[test]
fn unknown_balancer_key() {
    assert_errors(
        r#"[[balancer]]
name = "www"
listen = "8080"
servers = ["127.0.0.1:9001"]
algoritm = "roundrobin"

[[balancer]]
listen = "8081"
servers = ["127.0.0.1:9002"]
weight = 2
"#,
        &[
            (
                "5:1",
                "unknown key `algoritm` in [[balancer]] \"www\" (did you mean `algorithm`?)",
            ),
            ("10:1", "unknown key `weight` in [[balancer]] #2"),
        ],
    );
}

// ---- types ----

#[test]
fn string_where_an_integer_is_expected() {
    assert_errors(
        r#"[daemon]
threads = "4"

[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
max_clients = "100"
"#,
        &[
            ("2:11", "`threads` must be an integer, not a string"),
            ("7:15", "`max_clients` must be an integer, not a string"),
        ],
    );
}

#[test]
fn integer_where_a_string_is_expected() {
    assert_errors(
        r#"[daemon]
log = 1

[[balancer]]
name = 80
listen = 8080
servers = ["127.0.0.1:9001", 9002]
http_forwarded_for = "no"
"#,
        &[
            ("2:7", "`log` must be a string, not an integer"),
            ("5:8", "`name` must be a string, not an integer"),
            (
                "6:10",
                "`listen` must be a string or an array of strings, not an integer",
            ),
            ("7:30", "every server must be a string"),
            (
                "8:22",
                "`http_forwarded_for` must be true or false, not a string",
            ),
        ],
    );
}

// ---- [[balancer]] ----

#[test]
fn missing_listen() {
    assert_errors(
        r#"[daemon]
log = "stderr"

[[balancer]]
name = "www"
servers = ["127.0.0.1:9001"]
"#,
        &[("4:1", "[[balancer]] \"www\": missing `listen`")],
    );
}

#[test]
fn missing_servers() {
    // At the table's header.
    assert_errors(
        r#"[[balancer]]
# the web site
  name = "www"
listen = "8080"
"#,
        &[("1:1", "[[balancer]] \"www\": missing `servers`")],
    );
}

#[test]
fn missing_keys_of_an_empty_table_point_at_its_header() {
    // An empty table has no first key: its header is the place, not line 1 ([daemon]).
    assert_errors(
        r#"[daemon]
log = "stderr"

[[balancer]]

[[balancer]]
listen = "8081"
servers = ["127.0.0.1:9002"]
"#,
        &[
            ("4:1", "[[balancer]] #1: missing `listen`"),
            ("4:1", "[[balancer]] #1: missing `servers`"),
        ],
    );
}

#[test]
fn empty_servers() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = []
"#,
        &[("3:11", "[[balancer]] #1: `servers` is empty")],
    );
}

#[test]
fn bad_listen_address() {
    // Columns count characters: "ééé" is 3 columns, 6 bytes.
    assert_errors(
        r#"[[balancer]]
name = "www"
listen = ["0.0.0.0:8080", "ééé", "localhost:80", "0.0.0.0:0"]
servers = ["127.0.0.1:9001"]
"#,
        &[
            ("3:27", "invalid listen address \"ééé\""),
            ("3:34", "invalid listen address \"localhost:80\""),
            (
                "3:50",
                "listen address \"0.0.0.0:0\" needs a port other than 0",
            ),
        ],
    );
}

#[test]
fn server_with_a_bad_port() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = [
    "127.0.0.1:http",
    "127.0.0.1:70000",
    "127.0.0.1:0",
    "127.0.0.1:9001:x",
]
"#,
        &[
            (
                "4:5",
                "server \"127.0.0.1:http\": port \"http\" is not a port number",
            ),
            (
                "5:5",
                "server \"127.0.0.1:70000\": port \"70000\" is not a port number",
            ),
            ("6:5", "server \"127.0.0.1:0\": port 0 is not a valid port"),
            (
                "7:5",
                "server \"127.0.0.1:9001:x\": max \"x\" is not a number",
            ),
        ],
    );
}

#[test]
fn server_with_too_many_fields() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001:1:2:3:4", "127.0.0.1:9002:1:2:3:4:5"]
"#,
        &[(
            "3:38",
            "server \"127.0.0.1:9002:1:2:3:4:5\": too many fields",
        )],
    );
}

#[test]
fn server_ipv6_without_brackets() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["[2001:db8::1]:80", "2001:db8::2", "::1:80"]
"#,
        &[
            (
                "3:32",
                "server \"2001:db8::2\": IPv6 addresses need brackets",
            ),
            ("3:47", "server \"::1:80\": IPv6 addresses need brackets"),
        ],
    );
}

#[test]
fn duplicate_server() {
    // The second balancer's first server takes the listen port, so both are 127.0.0.1:9001.
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9001:10"]

[[balancer]]
listen = "9001"
servers = ["127.0.0.1", "127.0.0.1:9001"]
"#,
        &[
            ("3:48", "server 127.0.0.1:9001 is listed twice"),
            ("7:25", "server 127.0.0.1:9001 is listed twice"),
        ],
    );
}

#[test]
fn hard_limit_below_max() {
    // hard = 0 means no hard limit, so only the first server is wrong.
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001:100:50", "127.0.0.1:9002:100:0"]
"#,
        &[(
            "3:12",
            "server \"127.0.0.1:9001:100:50\": hard limit 50 is below the soft limit 100",
        )],
    );
}

#[test]
fn unknown_algorithm() {
    let e = errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
algorithm = "fastest"
"#,
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("4:13: unknown algorithm \"fastest\" (one of: "),
        "{}",
        e[0]
    );
    for name in [
        "sticky",
        "roundrobin",
        "hash",
        "weight",
        "prio",
        "leastconn",
        "consistent",
    ] {
        assert!(e[0].contains(name), "{name} missing from {}", e[0]);
    }
}

#[test]
fn duration_without_unit() {
    assert_errors(
        r#"[daemon]
shutdown_timeout = "5"

[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
blacklist = "30"
"#,
        &[
            (
                "2:20",
                "`shutdown_timeout`: duration \"5\" has no unit (write e.g. \"5s\" or \"5ms\")",
            ),
            ("7:13", "`blacklist`: duration \"30\" has no unit"),
        ],
    );
}

#[test]
fn unknown_duration_unit() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
idle_timeout = "5sec"
tracking = "1w"
"#,
        &[
            (
                "4:16",
                "`idle_timeout`: unknown unit \"sec\" in duration \"5sec\" (use ms, s, m, h or d)",
            ),
            ("5:12", "`tracking`: unknown unit \"w\" in duration \"1w\""),
        ],
    );
}

#[test]
fn zero_connect_timeout() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
connect_timeout = "0ms"
"#,
        &[("4:19", "`connect_timeout` must be more than 0s")],
    );
}

#[test]
fn integer_out_of_range() {
    assert_errors(
        r#"[daemon]
threads = 0

[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]
max_clients = 0
backlog = 70000
"#,
        &[
            ("2:11", "`threads` must be between 1 and 256, not 0"),
            (
                "7:15",
                "`max_clients` must be between 1 and 10000000, not 0",
            ),
            ("8:11", "`backlog` must be between 1 and 65535, not 70000"),
        ],
    );
}

#[test]
fn duplicate_balancer_name() {
    // The second use of the name is the mistake, so that is where the error points.
    assert_errors(
        r#"[[balancer]]
name = "www"
listen = "8080"
servers = ["127.0.0.1:9001"]

[[balancer]]
name = "www"
listen = "8081"
servers = ["127.0.0.1:9002"]
"#,
        &[("7:8", "balancer name \"www\" is used twice")],
    );
}

#[test]
fn duplicate_balancer_name_is_reported_even_when_the_first_has_errors() {
    assert_errors(
        r#"[[balancer]]
name = "www"
listen = "nope"
servers = ["127.0.0.1:9001"]

[[balancer]]
name = "www"
listen = "8081"
servers = ["127.0.0.1:9002"]
"#,
        &[
            ("3:10", "invalid listen address \"nope\""),
            ("7:8", "balancer name \"www\" is used twice"),
        ],
    );
}

#[test]
fn listen_address_used_twice() {
    // "8080" means 0.0.0.0:8080.
    assert_errors(
        r#"[[balancer]]
name = "a"
listen = "8080"
servers = ["127.0.0.1:9001"]

[[balancer]]
name = "b"
listen = "0.0.0.0:8080"
servers = ["127.0.0.1:9002"]
"#,
        &[(
            "8:10",
            "listen address 0.0.0.0:8080 is already used by balancer \"a\"",
        )],
    );
}

#[test]
fn listen_address_used_twice_by_unnamed_balancers() {
    assert_errors(
        r#"[[balancer]]
listen = "8080"
servers = ["127.0.0.1:9001"]

[[balancer]]
listen = "0.0.0.0:8080"
servers = ["127.0.0.1:9002"]
"#,
        &[(
            "6:10",
            "listen address 0.0.0.0:8080 is already used by balancer \"lb1\"",
        )],
    );
}

#[test]
fn listen_address_used_twice_in_one_balancer() {
    // `fwlb run` fails on this with "Address already in use"; `check` must say so first.
    assert_errors(
        r#"[[balancer]]
listen = ["8080", "0.0.0.0:8080"]
servers = ["127.0.0.1:9001"]
"#,
        &[("2:19", "0.0.0.0:8080")],
    );
}

// ---- [daemon] ----

#[test]
fn bad_log_value() {
    assert_errors(
        r#"[daemon]
log = "file"
"#,
        &[(
            "2:7",
            "`log` must be \"stderr\" or \"syslog\", not \"file\"",
        )],
    );
}

#[test]
fn bad_control() {
    assert_errors(
        r#"[daemon]
control = "localhost:8888"
"#,
        &[(
            "2:11",
            "`control` \"localhost:8888\" must be \"ADDR:PORT\", a unix socket path or \"none\"",
        )],
    );
}

// ---- [[vrrp]] ----

#[test]
fn vrrp_vrid_out_of_range() {
    assert_errors(
        r#"[[vrrp]]
vrid = 256
interface = "eth0"
addresses = ["198.51.100.10/24"]
priority = 0
"#,
        &[
            ("2:8", "`vrid` must be between 1 and 255, not 256"),
            ("5:12", "`priority` must be between 1 and 255, not 0"),
        ],
    );
}

#[test]
fn vrrp_v2_advert_interval_not_whole_seconds() {
    // The same interval is valid for VRRPv3 (10ms steps).
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10/24"]
advert_interval = "1500ms"

[[vrrp]]
vrid = 2
interface = "eth0"
addresses = ["198.51.100.11/24"]
version = 3
advert_interval = "1500ms"
"#,
        &[(
            "5:19",
            "`advert_interval` for VRRPv2 must be whole seconds from 1s to 255s",
        )],
    );
}

#[test]
fn vrrp_password_with_version_3() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10/24"]
version = 3
password = "secret"
"#,
        &[(
            "6:12",
            "`password` exists only in VRRPv2 (RFC 5798 removed authentication)",
        )],
    );
}

#[test]
fn vrrp_depends_on_a_missing_vrid() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10/24"]
depends = [2]

[[vrrp]]
vrid = 2
interface = "eth1"
addresses = ["10.0.0.1/24"]
depends = [1, 3]
"#,
        // At the missing VRID itself.
        &[("11:15", "VRID 2 depends on VRID 3, which is not configured")],
    );
}

#[test]
fn vrrp_depends_on_a_vrid_with_errors_is_not_called_missing() {
    // VRID 1 is configured (wrongly): one error for its address, no "not configured" for 2.
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10"]

[[vrrp]]
vrid = 2
interface = "eth1"
addresses = ["10.0.0.1/24"]
depends = [1]
"#,
        &[("4:14", "VRRP address \"198.51.100.10\" must be ADDR/PREFIX")],
    );
}

#[test]
fn vrrp_duplicate_vrid_points_at_the_second() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10/24"]

[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.11/24"]
"#,
        &[("7:8", "VRID 1 is configured twice on eth0")],
    );
}

#[test]
fn vrrp_bad_address_cidr() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10", "198.51.100.11/33", "2001:db8::1/64"]
"#,
        &[
            ("4:14", "VRRP address \"198.51.100.10\" must be ADDR/PREFIX"),
            (
                "4:31",
                "VRRP address \"198.51.100.11/33\" must be ADDR/PREFIX",
            ),
        ],
    );
}

#[test]
fn vrrp_bad_peer() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["198.51.100.10/24"]
peers = ["198.51.100.3", "fwlb2"]
"#,
        &[("5:26", "peer \"fwlb2\" must be an IP address")],
    );
}

/// Two balancers and a `[[vrrp]]` whose last key is `track = TRACK`.
fn tracking(track: &str) -> String {
    format!(
        r#"[[balancer]]
name = "www"
listen = "192.0.2.10:80"
servers = ["10.0.0.11"]

[[balancer]]
name = "app"
listen = "192.0.2.10:8000"
servers = ["10.0.0.11"]

[[vrrp]]
vrid = 1
interface = "eth0"
priority = 150
addresses = ["192.0.2.10/24"]
track = {track}
"#
    )
}

#[test]
fn vrrp_track_is_valid_inline_and_as_tables() {
    let (out, _f) = check_src(&tracking(
        r#"[{ balancer = "www", weight = -60 }, { balancer = "app", weight = 20 }]"#,
    ));
    assert_ok(&out);
    let src = tracking("[]").replace(
        "track = []\n",
        "[[vrrp.track]]\nbalancer = \"www\"\nweight = -60\n",
    );
    let (out, _f) = check_src(&src);
    assert_ok(&out);
}

#[test]
fn vrrp_track_names_an_unknown_balancer() {
    assert_errors(
        &tracking(r#"[{ balancer = "wwww", weight = -60 }]"#),
        &[(
            "16:23",
            "`track`: no balancer named \"wwww\" (did you mean `www`?); balancers: \"www\", \"app\"",
        )],
    );
}

#[test]
fn vrrp_track_weight_out_of_range_zero_or_missing() {
    assert_errors(
        &tracking(
            r#"[{ balancer = "www", weight = -255 }, { balancer = "app", weight = 0 }, { balancer = "www" }, { weight = -10 }, "www"]"#,
        ),
        &[(
            "16:9",
            "`track` must be an array of tables, e.g. [{ balancer = \"www\", weight = -60 }]",
        )],
    );
    assert_errors(
        &tracking(
            r#"[{ balancer = "www", weight = -255 }, { balancer = "app", weight = 0 }, { weight = -10 }]"#,
        ),
        &[
            ("16:39", "`weight` must be between -254 and 254, not -255"),
            ("16:76", "`weight` 0 would never change the priority"),
            ("16:81", "a `track` entry needs a `balancer`"),
        ],
    );
    assert_errors(
        &tracking(r#"[{ balancer = "www", wieght = -60 }]"#),
        &[
            ("16:10", "a `track` entry needs a `weight`"),
            (
                "16:30",
                "unknown key `wieght` in a `track` entry (did you mean `weight`?)",
            ),
        ],
    );
}

#[test]
fn vrrp_track_twice_or_on_the_owner() {
    assert_errors(
        &tracking(r#"[{ balancer = "www", weight = -60 }, { balancer = "www", weight = -10 }]"#),
        &[("16:59", "balancer \"www\" is tracked twice by VRID 1")],
    );
    assert_errors(
        &tracking(r#"[{ balancer = "www", weight = -60 }]"#)
            .replace("priority = 150", "priority = 255"),
        &[(
            "16:9",
            "`track` cannot move the address owner (priority 255)",
        )],
    );
}

// ---- [firewall] ----

#[test]
fn firewall_bad_backend() {
    assert_errors(
        r#"[firewall]
backend = "iptables"
front = "eth0"
"#,
        &[(
            "2:11",
            "`backend` must be \"nftables\", \"pf\" or \"none\", not \"iptables\"",
        )],
    );
}

// ---- the whole file ----

#[test]
fn every_error_is_reported_one_per_line_in_file_order() {
    // Found in a different order (unknown keys first, cross-checks last), printed by position.
    assert_errors(
        r#"[daemon]
usr = "fwlb"
log = "file"
shutdown_timeout = "30"

[[balancer]]
name = "a"
listen = "nope"
servers = ["127.0.0.1:9001", "127.0.0.1:http"]
algorithm = "fastest"
colour = "blue"

[[balancer]]
name = "b"
listen = "8080"
servers = ["127.0.0.1:9002"]

[[balancer]]
name = "c"
listen = "8080"
servers = ["127.0.0.1:9003"]

[[vrrp]]
vrid = 300
interface = "eth0"
addresses = ["198.51.100.10/24"]

[firewall]
backend = "iptables"
"#,
        &[
            (
                "2:1",
                "unknown key `usr` in [daemon] (did you mean `user`?)",
            ),
            ("3:7", "`log` must be"),
            ("4:20", "`shutdown_timeout`: duration \"30\" has no unit"),
            ("8:10", "invalid listen address \"nope\""),
            ("9:30", "port \"http\" is not a port number"),
            ("10:13", "unknown algorithm \"fastest\""),
            ("11:1", "unknown key `colour` in [[balancer]] \"a\""),
            (
                "20:10",
                "listen address 0.0.0.0:8080 is already used by balancer \"b\"",
            ),
            ("24:8", "`vrid` must be between 1 and 255, not 300"),
            ("29:11", "`backend` must be"),
        ],
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such.toml");
    let out = check_path(&path);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    let want = format!("{}: cannot read: ", path.display());
    assert!(out.stderr.starts_with(&want), "{:?}", out.stderr);
    assert!(out.stderr.contains("No such file"), "{:?}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
}

// ---- the shipped example and the design example ----

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/fwlb.toml")
}

/// The example with its switched-off blocks switched on: between a line starting `# >>>` and
/// one starting `# <<<`, lines starting `# ` lose that prefix (`## ` lines stay comments).
fn switch_on_blocks(src: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in src.lines() {
        if line.starts_with("# >>>") {
            inside = true;
        } else if line.starts_with("# <<<") {
            inside = false;
        }
        let line = match line.strip_prefix("# ") {
            Some(rest) if inside && !line.starts_with("# >>>") => rest,
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    assert!(!inside, "a `# >>>` block is not closed by `# <<<`");
    out
}

#[test]
fn shipped_example_passes_and_runs_as_is() {
    let out = check_path(&example_path());
    assert_ok(&out);
    // No "note:" about settings `fwlb run` refuses: the active part runs on a plain host.
    assert_eq!(
        out.stderr, "",
        "notes for the active part of conf/fwlb.toml"
    );
}

#[test]
fn shipped_example_with_every_block_switched_on_passes_and_shows_every_key() {
    let src = std::fs::read_to_string(example_path()).expect("read conf/fwlb.toml");
    let full = switch_on_blocks(&src);
    assert_ne!(full, src, "conf/fwlb.toml has no `# >>>` blocks");
    let (out, _file) = check_src(&full);
    assert_ok(&out);
    // Every block runs in this version (VRRP and the firewall with user/chroot too, through
    // the privileged parent): no "cannot run" notes.
    assert_eq!(out.stderr, "", "notes for the switched-on example");
    // Every key the validator knows is shown, as `key = ...` at the start of a line.
    let keys = [
        // [daemon]
        "user",
        "chroot",
        "control",
        "control_allow",
        "control_exit",
        "state_file",
        "pidfile",
        "log",
        "shutdown_timeout",
        "threads",
        // [[balancer]]
        "name",
        "listen",
        "servers",
        "algorithm",
        "emergency",
        "blacklist",
        "tracking",
        "connect_timeout",
        "idle_timeout",
        "max_clients",
        "max_connections",
        "backlog",
        "proxy_protocol",
        "http_forwarded_for",
        "trusted_proxies",
        // [[vrrp]]
        "vrid",
        "interface",
        "priority",
        "addresses",
        "version",
        "advert_interval",
        "password",
        "preempt",
        "preempt_delay",
        "depends",
        "peers",
        "notify_master",
        "notify_backup",
        // [firewall]
        "backend",
        "front",
        "back",
        "allow",
        "nat",
        "keep_on_exit",
        "syn_rate",
    ];
    for key in keys {
        let shown = full.lines().any(|l| l.starts_with(&format!("{key} = ")));
        assert!(shown, "key `{key}` is not in conf/fwlb.toml");
    }
    for header in ["[daemon]", "[[balancer]]", "[[vrrp]]", "[firewall]"] {
        assert!(
            full.lines().any(|l| l.starts_with(header)),
            "{header} is not in conf/fwlb.toml"
        );
    }
}

/// The example of /work/shared/design/config.md, verbatim.
const DESIGN_EXAMPLE: &str = r#"# One file per host. This is host fwlb1 of a pair; fwlb2 differs in priorities.

[daemon]
user = "fwlb"                   # the unprivileged user the child runs as
chroot = "/var/chroot/fwlb"     # the child's root directory
control = "127.0.0.1:8888"      # pen-compatible control port: "ADDR:PORT" or a unix socket path
state_file = "/var/db/fwlb/state"  # runtime changes (blacklists, weights, drains) kept across restarts
pidfile = "/var/run/fwlb.pid"   # optional
log = "stderr"                  # "stderr" (for runit/daemontools) or "syslog"

[[balancer]]
name = "www"
listen = "198.51.100.10:80"     # usually a VIP: bound even while this host does not hold it
servers = ["10.0.0.11:80", "10.0.0.12:80:100:120:2:0"]   # pen's host:port:max:hard:weight:prio
algorithm = "sticky"            # pen's default: sticky by client IP, new clients round robin;
                                # also "roundrobin", "hash", "weight", "prio", "leastconn", "consistent"
emergency = "10.0.0.99:80"      # optional server of last resort (pen -e)
blacklist = "30s"               # how long a failed server is skipped (pen -b)
tracking = "0s"                 # how long a client is remembered; 0 = until the table is full (pen -T)
connect_timeout = "3s"          # pen -t
idle_timeout = "0s"             # 0 = never
max_clients = 2048              # pen -c
max_connections = 10000         # pen -x
proxy_protocol = "none"         # "none", "v1" or "v2": tell servers the client address
http_forwarded_for = false      # pen -H: add X-Forwarded-For / X-Forwarded-Proto to HTTP/1.x requests
trusted_proxies = []            # clients whose own X-Forwarded-For is kept and appended to;
                                # from anyone else a client-sent X-Forwarded-For is replaced
# health = { check = "tcp", interval = "2s", timeout = "1s", rise = 2, fall = 3 }

[[vrrp]]
vrid = 1
interface = "eth0"
priority = 255                  # 255 = address owner, 1..254 backup, 0 is reserved
addresses = ["198.51.100.10/24"]
version = 2                     # 2 (RFC 3768) or 3 (RFC 5798)
advert_interval = "1s"          # v2: whole seconds; v3: 10ms steps
password = "vrid1"              # v2 simple-text authentication (interop only, not security)
preempt = true
depends = [2]                   # freevrrpd's vridsdep: fail together with VRID 2
peers = ["198.51.100.3"]        # the other host(s); the firewall admits VRRP only from them
notify_master = ""              # optional scripts run on transitions (freevrrpd masterscript)
notify_backup = ""

[[vrrp]]
vrid = 2
interface = "eth1"
priority = 255
addresses = ["10.0.0.1/24"]     # the back network's gateway address for the servers
depends = [1]

[firewall]
backend = "nftables"            # "nftables" (Linux), "pf" (FreeBSD) or "none"
front = "eth0"                  # the internet-facing interface: default deny inbound
back = "eth1"                   # the servers' network
allow = ["tcp/22 from 192.0.2.0/24"]  # extra admin openings; listeners and VRRP peers are automatic
nat = true                      # masquerade the back network's outbound traffic through the front
"#;

#[test]
fn design_example_passes() {
    let (out, _file) = check_src(DESIGN_EXAMPLE);
    assert_ok(&out);
}

#[test]
fn vrrp_ipv6_needs_version_3_and_one_family() {
    assert_errors(
        r#"[[vrrp]]
vrid = 1
interface = "eth0"
addresses = ["fd77::10/64"]

[[vrrp]]
vrid = 2
interface = "eth0"
addresses = ["fd77::11/64", "198.51.100.10/24"]
version = 3

[[vrrp]]
vrid = 3
interface = "eth0"
addresses = ["fe80::1/64", "fd77::12/64"]
version = 3
peers = ["fe80::2", "198.51.100.3"]
"#,
        &[
            ("4:13", "IPv6 addresses need `version = 3`"),
            ("9:13", "`addresses` mixes IPv4 and IPv6"),
            (
                "17:21",
                "peer \"198.51.100.3\" is not of the family of `addresses`",
            ),
        ],
    );
}

// ---- health checks ----

#[test]
fn health_check_errors_each_at_its_value() {
    assert_errors(
        r#"[[balancer]]
listen = "127.0.0.1:8080"
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
health = { check = "icmp", interval = "0s", rise = 0, intervl = "1s",
           expect_status = ["200", "399-200", "abc"], path = "health", send = '\q' }

[[balancer]]
listen = "127.0.0.1:8081"
servers = ["127.0.0.1:9001"]
health = "tcp"
on_down = "cut"

[[balancer]]
listen = "127.0.0.1:8082"
servers = ["127.0.0.1:9001"]
health = { check = "send-expect", timeout = "soon" }
"#,
        &[
            ("4:20", "`check`: \"icmp\" is not one of"),
            ("4:39", "`interval` must be more than 0s"),
            ("4:52", "`rise` must be between 1 and 1000, not 0"),
            (
                "4:55",
                "unknown key `intervl` in `health` (did you mean `interval`?)",
            ),
            ("5:36", "`expect_status`: \"399-200\" is not a status code"),
            ("5:47", "`expect_status`: \"abc\" is not a status code"),
            ("5:62", "`path`: \"health\" must start with /"),
            ("5:79", "`send`: unknown escape \\q"),
            ("10:10", "`health` must be a table"),
            (
                "11:11",
                "`on_down`: \"cut\" is not \"keep\" or \"shutdown\"",
            ),
            ("16:20", "needs a non-empty `expect`"),
            ("16:45", "`timeout`: invalid duration \"soon\""),
        ],
    );
}

#[test]
fn health_checks_that_parse() {
    let (out, _f) = check_src(
        r#"[[balancer]]
listen = "127.0.0.1:8080"
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
health = { check = "http", method = "HEAD", path = "/health", host = "app.internal",
           expect_status = ["200-299", "301"], expect_body = "ok", interval = "2s",
           fast_interval = "500ms", down_interval = "5s", timeout = "1s", rise = 2, fall = 3,
           port = 8081, proxy_protocol = true }
slowstart = "30s"
on_down = "shutdown"

[[balancer]]
listen = "127.0.0.1:8081"
servers = ["127.0.0.1:6379"]
health = { check = "send-expect", send = 'PING\r\n', expect = "+PONG" }
"#,
    );
    assert_ok(&out);
}

#[test]
fn agent_check_errors_each_at_its_value() {
    assert_errors(
        r#"[[balancer]]
listen = "127.0.0.1:8080"
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
agent = { port = 0, interval = "0s", every = "1s" }

[[balancer]]
listen = "127.0.0.1:8081"
servers = ["127.0.0.1:9001"]
agent = { interval = "2s" }

[[balancer]]
listen = "127.0.0.1:8082"
servers = ["127.0.0.1:9001"]
agent = 9999
"#,
        &[
            ("4:18", "`port` must be between 1 and 65535, not 0"),
            ("4:32", "`interval` must be more than 0s"),
            ("4:38", "unknown key `every` in `agent`"),
            ("9:9", "`agent` needs a `port`"),
            ("14:9", "`agent` must be a table"),
        ],
    );
}

#[test]
fn an_agent_check_that_parses() {
    let (out, _f) = check_src(
        r#"[[balancer]]
listen = "127.0.0.1:8080"
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
agent = { port = 9999, interval = "2s", timeout = "1s" }
"#,
    );
    assert_ok(&out);
}
