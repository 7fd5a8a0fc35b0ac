//! The freevrrpd.conf importer behind `fwlb vrrpd -f FILE` and `fwlb check --freevrrpd FILE`,
//! called as a library on the files of tests/fixtures/freevrrpd/: FreeVRRPd's own sample and
//! default file, a firewall pair, odd spacing, every error with its exact `LINE:COL`, and every
//! note. Messages are compared with their `FILE:` prefix removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fwlb::config::freevrrpd::{self, Imported};
use fwlb::config::{Vrrp, parse_cidr};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freevrrpd")
        .join(name)
}

/// `PATH:LINE:COL: message` -> `LINE:COL: message`.
fn strip(path: &Path, lines: &[String]) -> Vec<String> {
    let label = format!("{}:", path.display());
    lines
        .iter()
        .map(|l| {
            l.strip_prefix(&label)
                .unwrap_or_else(|| panic!("{l:?} does not start with {label:?}"))
                .to_string()
        })
        .collect()
}

/// Import a fixture that must succeed; its notes come back without the path.
fn import(name: &str) -> (Imported, Vec<String>) {
    let path = fixture(name);
    match freevrrpd::load(&path) {
        Ok(i) => {
            let notes = strip(&path, &i.notes);
            check_model(&i);
            (i, notes)
        }
        Err(e) => panic!("{name} should import:\n{e}"),
    }
}

/// Import a fixture that must fail; the errors come back without the path.
fn errors(name: &str) -> Vec<String> {
    let path = fixture(name);
    match freevrrpd::load(&path) {
        Ok(i) => panic!("{name} should fail, imported {:#?}", i.config.vrrp),
        Err(e) => strip(&path, &e.0),
    }
}

fn parse(src: &str) -> Result<(Imported, Vec<String>), Vec<String>> {
    let path = Path::new("t.conf");
    freevrrpd::parse_str(src, path)
        .map(|i| {
            let notes = strip(path, &i.notes);
            (i, notes)
        })
        .map_err(|e| strip(path, &e.0))
}

/// What every import must hold: what config/mod.rs would accept in [[vrrp]].
fn check_model(i: &Imported) {
    assert!(i.config.daemon.control.is_none(), "no control port");
    assert!(i.config.balancers.is_empty() && i.config.firewall.is_none());
    for v in &i.config.vrrp {
        assert!(v.vrid >= 1 && v.priority >= 1);
        assert!(!v.addresses.is_empty());
        for a in &v.addresses {
            assert!(parse_cidr(a).is_some(), "{a:?} is ADDR/PREFIX");
        }
        // freevrrpd: VRRPv2 only, 1 s fixed, always preempts, multicast only.
        assert_eq!(v.version, 2);
        assert_eq!(v.advert_interval, Duration::from_secs(1));
        assert!(v.preempt);
        assert_eq!(v.preempt_delay, Duration::ZERO);
        assert!(v.peers.is_empty());
        assert!(v.password.as_ref().is_none_or(|p| p.len() <= 8));
    }
}

/// The fields that come from the file, in one comparable line.
fn fields(v: &Vrrp) -> String {
    format!(
        "vrid {} on {} prio {} addrs {:?} password {:?} depends {:?} master {:?} backup {:?}",
        v.vrid,
        v.interface,
        v.priority,
        v.addresses,
        v.password,
        v.depends,
        v.notify_master,
        v.notify_backup
    )
}

fn all_fields(i: &Imported) -> Vec<String> {
    i.config.vrrp.iter().map(fields).collect()
}

#[test]
fn package_sample_refuses_addresses_on_other_devices() {
    // FreeVRRPd's sample puts two addresses of VRID 1 on vlan100/vlan101, which fwlb's
    // [[vrrp]] cannot express (it adds a VRID's addresses to its interface).
    assert_eq!(
        errors("sample.conf"),
        vec![
            "11:21: `vlan100:` puts 192.168.1.1/30 on vlan100, but fwlb adds every address of a VRID to its `interface` (rl0): move the address to a [VRID] on vlan100, or drop `vlan100:` if rl0 is right",
            "11:45: `vlan101:` puts 192.168.10.1/30 on vlan101, but fwlb adds every address of a VRID to its `interface` (rl0): move the address to a [VRID] on vlan101, or drop `vlan101:` if rl0 is right",
        ]
    );
}

#[test]
fn package_sample_without_device_prefixes() {
    let text = std::fs::read_to_string(fixture("sample.conf")).expect("fixture");
    let (i, notes) = parse(&text.replace("vlan100:", "").replace("vlan101:", ""))
        .unwrap_or_else(|e| panic!("{e:#?}"));
    check_model(&i);
    assert_eq!(
        all_fields(&i),
        vec![
            // `serverid = 1 ` keeps the sample's trailing space: atoi() reads 1.
            r#"vrid 1 on rl0 prio 255 addrs ["10.0.0.1/32", "192.168.1.1/30", "192.168.10.1/30"] password Some("vrid1") depends [2, 3] master Some("/usr/local/bin/master_script.sh") backup Some("/usr/local/bin/backup_script.sh")"#,
            r#"vrid 2 on xl0 prio 100 addrs ["192.168.1.2/32"] password Some("vrid2") depends [] master None backup None"#,
            r#"vrid 3 on bge0 prio 255 addrs ["192.168.2.2/32"] password Some("vrid3") depends [] master None backup None"#,
        ]
    );
    assert_eq!(
        notes,
        vec![
            "8:18: `carriertimeout` has no effect: fwlb does not change the NIC's MAC address on a transition, so there is no carrier loss to wait for",
            "9:23: `spanningtreelatency = 0` is freevrrpd's default: no wait after a transition, as in fwlb",
            "12:21: `monitoredcircuits`: fwlb always follows the link state of each VRRP interface",
            "13:22: `MCClearErrorsCount` has no effect: fwlb never locks an interface out after repeated link faults (freevrrpd did after 5)",
            "16:12: `vridsdep` is one-way in freevrrpd (VRIDs 2, 3 went down when VRID 1's interface failed, not the reverse); in fwlb they form one group that goes to backup together whichever member fails",
        ]
    );
}

#[test]
fn package_default_file() {
    let (i, notes) = import("freevrrpd.conf");
    assert_eq!(
        all_fields(&i),
        vec![
            r#"vrid 100 on em0 prio 255 addrs ["10.2.2.1/24"] password None depends [] master None backup None"#
        ]
    );
    assert_eq!(
        notes,
        vec![
            "4:18: `carriertimeout` has no effect: fwlb does not change the NIC's MAC address on a transition, so there is no carrier loss to wait for",
            "5:23: `spanningtreelatency = 0` is freevrrpd's default: no wait after a transition, as in fwlb",
            "8:21: `monitoredcircuits = no` has no effect: fwlb always follows the link state of each VRRP interface and applies `vridsdep` (freevrrpd with `no` on its last [VRID] ran no link monitor at all)",
            "9:22: `MCClearErrorsCount` has no effect: fwlb never locks an interface out after repeated link faults (freevrrpd did after 5)",
        ]
    );
}

#[test]
fn firewall_pair_with_mutual_vridsdep() {
    let (i, notes) = import("pair-fw1.conf");
    assert_eq!(
        all_fields(&i),
        vec![
            r#"vrid 1 on em0 prio 200 addrs ["198.51.100.10/24", "198.51.100.11/24"] password Some("front1") depends [2] master Some("/usr/local/etc/vrrp/master.sh front") backup Some("/usr/local/etc/vrrp/backup.sh front")"#,
            r#"vrid 2 on em1 prio 200 addrs ["10.0.0.1/24"] password Some("back2") depends [1] master Some("/usr/local/etc/vrrp/master.sh back") backup Some("/usr/local/etc/vrrp/backup.sh back")"#,
        ]
    );
    assert!(
        notes.is_empty(),
        "every key maps, each side lists the other: {notes:#?}"
    );
    assert_eq!(i.config.path, fixture("pair-fw1.conf"));
}

#[test]
fn comments_and_odd_spacing() {
    let (i, notes) = import("spacing.conf");
    assert_eq!(
        all_fields(&i),
        vec![
            // `key=value`, a tab before `=`, blanks around values and list elements, an empty
            // list element; the password keeps its trailing blanks, the script loses them.
            r#"vrid 10 on em0 prio 90 addrs ["10.0.0.10/24", "10.0.0.11/24", "10.0.0.12/24"] password Some("pa ss   ") depends [11, 12] master Some("/usr/local/bin/up.sh") backup None"#,
            r#"vrid 11 on em1 prio 100 addrs ["10.1.0.1/16"] password None depends [] master None backup None"#,
            // The last line (`password`) has no newline: freevrrpd never reads it.
            r#"vrid 12 on em2 prio 110 addrs ["10.2.0.1/16"] password None depends [] master None backup Some("/usr/local/bin/down.sh")"#,
        ]
    );
    assert_eq!(
        notes,
        vec![
            "5:10: text after `[VRID]` is ignored (as by freevrrpd)",
            "10:12: `vridsdep` is one-way in freevrrpd (VRIDs 11, 12 went down when VRID 10's interface failed, not the reverse); in fwlb they form one group that goes to backup together whichever member fails",
            "11:12: the password ends with blanks, which freevrrpd keeps as part of it; so does fwlb",
            "16:13: only the first interface of the list is used (as by freevrrpd)",
            "22:8: `em2:` names the VRID's own interface, where fwlb adds its addresses anyway",
            "23:12: only the first number of `priority` is used (as by freevrrpd)",
            "24:1: `priority` is set again: the value of line 23 is ignored (freevrrpd keeps the last one too)",
            "26:1: this last line has no newline at its end: freevrrpd never reads such a line, so fwlb ignores it too (end the file with a newline to use it)",
        ]
    );
}

#[test]
fn every_error_at_its_place() {
    assert_eq!(
        errors("errors.conf"),
        vec![
            "3:12: `serverid` must be between 1 and 255, not 0",
            "4:13: `interface`: \"this-name-is-too-long\" is longer than 15 bytes, too long for an interface name",
            "5:12: `priority` 0 is reserved for a master that is stopping (RFC 3768 5.3.4): use 1..254 for a backup, 255 for the address owner",
            "6:8: \"10.0.0.1\" needs a prefix length, e.g. \"10.0.0.1/32\" (freevrrpd exits without one)",
            "6:18: \"010.0.0.2\" is not a plain dotted-quad address: freevrrpd (inet_addr) read it as 8.0.0.2; write that",
            "6:41: prefix length \"33\" must be a number from 0 to 32",
            "6:45: \"fd00::1/64\": freevrrpd.conf addresses are IPv4 only (configure IPv6 VRRP in an fwlb config, [[vrrp]] with version = 3)",
            "6:57: \"10.0.0.4/24/1\" must be a.b.c.d/len",
            "6:85: address 10.0.0.5 is listed twice",
            "7:12: `password` is empty (freevrrpd crashes or sends an empty password): remove the line for no authentication",
            "8:1: unknown key `prority` in [VRID] (did you mean `priority`?); freevrrpd logged and ignored it, fwlb refuses it",
            "9:21: `monitoredcircuits` must be `yes` or `no`, not \"on\" (freevrrpd exits on any other value)",
            "10:16: `AHencryption = yes` (IPsec AH) is not supported: freevrrpd documents it as not implemented and fwlb has no AH; use `password` or no authentication",
            "11:1: a comment must start with `#` in column 1 (freevrrpd stops at this line)",
            "12:1: a key must start in column 1 (freevrrpd stops at an indented line)",
            "13:1: this line holds only blanks, which stops freevrrpd: leave it empty",
            "14:1: `monitoredcircuits` has no `=`: write `monitoredcircuits = VALUE`",
            "16:1: `presharedkey` (the IPsec AH key) is not supported: freevrrpd documents it as not implemented and fwlb has no AH; remove it, or use `password`",
            "17:1: `statescript` belongs to the motoprogger/FreeVRRPd fork, which fwlb does not import (freevrrpd itself ignores it): use `masterscript` and `backupscript`",
            "18:15: `vridsdep`: this VRID lists VRID 99, which is not configured",
            "18:19: `vridsdep` must be a number from 1 to 255, not \"x\" (freevrrpd read it as 0)",
            "19:1: section headers are written `[VRID]`, in capitals",
            "20:12: `serverid` must be between 1 and 255, not 300",
            "22:8: `vlan5:` puts 10.9.0.1/24 on vlan5, but fwlb adds every address of a VRID to its `interface` (em1): move the address to a [VRID] on vlan5, or drop `vlan5:` if em1 is right",
            "23:1: this [VRID] has no `serverid` (the VRID, 1..255)",
            "23:1: this [VRID] has no `addr` (the virtual addresses, a.b.c.d/len)",
            "30:12: VRID 3 is configured twice on em0 (first at line 26)",
        ]
    );
}

#[test]
fn every_ignored_key_is_a_note() {
    let (i, notes) = import("notes.conf");
    assert_eq!(
        all_fields(&i),
        vec![
            r#"vrid 5 on em0 prio 100 addrs ["192.0.2.5/24"] password Some("longpass") depends [] master None backup None"#,
            // Only the last `addr` line counts, as in freevrrpd.
            r#"vrid 6 on em1 prio 100 addrs ["192.0.2.7/24"] password None depends [] master None backup None"#,
        ]
    );
    assert_eq!(
        notes,
        vec![
            "4:18: `carriertimeout` has no effect: fwlb does not change the NIC's MAC address on a transition, so there is no carrier loss to wait for",
            "6:21: `monitoredcircuits = no` has no effect: fwlb always follows the link state of each VRRP interface and applies `vridsdep` (freevrrpd with `no` on its last [VRID] ran no link monitor at all)",
            "7:22: `MCClearErrorsCount` has no effect: fwlb never locks an interface out after repeated link faults (freevrrpd did after 5)",
            "8:23: `spanningtreelatency` has no effect: fwlb does not wait after a transition (freevrrpd slept 30 s before its timers and scripts)",
            "9:16: `AHencryption = no` is the default: IPsec AH is not used",
            "10:10: `useIKE = no` is the default: IPsec AH is not used",
            "11:11: `useVMAC` has no effect: freevrrpd(8) documents it but freevrrpd never reads it (it logs \"option unknown\"), and fwlb ignores it too",
            "12:21: `sendgratuitousarp` has no effect: freevrrpd(8) documents it but freevrrpd never reads it (it logs \"option unknown\"), and fwlb ignores it too",
            "13:12: `password` is 12 bytes long: VRRPv2 carries 8, so freevrrpd used only the first 8 and so does fwlb",
            "14:8: text after `[VRID]` is ignored (as by freevrrpd)",
            "15:18: `carriertimeout` has no effect: fwlb does not change the NIC's MAC address on a transition, so there is no carrier loss to wait for (freevrrpd ignored this one anyway: it must follow `interface`)",
            "19:1: `addr` is set again: freevrrpd uses only the last `addr` line, so fwlb ignores the addresses of line 18 too (list every address on one line)",
        ]
    );
}

const OK: &str = "[VRID]\nserverid = 1\ninterface = em0\naddr = 192.0.2.1/24\n";

#[test]
fn unknown_keys_with_hints() {
    let e = parse(&format!(
        "{OK}Priority = 50\nintreface = em1\nbackupScript = /x\nvirtual_router_id = 1\nmc_clear=3\n"
    ))
    .unwrap_err();
    assert_eq!(
        e,
        vec![
            "5:1: unknown key `Priority` in [VRID] (did you mean `priority`?); freevrrpd logged and ignored it, fwlb refuses it",
            "6:1: unknown key `intreface` in [VRID] (did you mean `interface`?); freevrrpd logged and ignored it, fwlb refuses it",
            "7:1: unknown key `backupScript` in [VRID] (did you mean `backupscript`?); freevrrpd logged and ignored it, fwlb refuses it",
            "8:1: unknown key `virtual_router_id` in [VRID]; freevrrpd logged and ignored it, fwlb refuses it",
            "9:1: unknown key `mc_clear` in [VRID]; freevrrpd logged and ignored it, fwlb refuses it",
        ]
    );
}

#[test]
fn file_level_errors() {
    let before = "# comment\n\npriority = 100\nserverid = 2\n";
    assert_eq!(
        parse(&format!("{before}{OK}")).unwrap_err(),
        vec![
            "3:1: freevrrpd.conf must start with a `[VRID]` line (only comments and empty lines may come before it; freevrrpd stops with \"cannot see [VRID] section\")"
        ]
    );
    assert_eq!(
        parse(&OK.replace('\n', "\r\n")).unwrap_err(),
        vec![
            "1:7: this line ends with a carriage return (DOS line endings), which freevrrpd keeps in the value: convert the file to Unix line endings"
        ]
    );
    // fgets(line, 1024) holds 1022 bytes and the newline.
    let script = |n: usize| format!("{OK}masterscript = /bin/{}\n", "x".repeat(n - 20));
    assert!(parse(&script(1022)).is_ok());
    assert_eq!(
        parse(&script(1023)).unwrap_err(),
        vec!["5:1: this line is 1023 bytes long: freevrrpd reads at most 1022 bytes per line"]
    );
    assert_eq!(
        parse(&format!("{OK}password = ab\0cd\n")).unwrap_err(),
        vec!["5:14: NUL byte: freevrrpd's C strings end here"]
    );
    assert_eq!(
        parse("[VRID]\n[VRID]\nserverid = 1\ninterface = em0\n").unwrap_err(),
        vec![
            "1:1: this [VRID] has no `serverid` (the VRID, 1..255)",
            "1:1: this [VRID] has no `interface`",
            "1:1: this [VRID] has no `addr` (the virtual addresses, a.b.c.d/len)",
            "2:1: this [VRID] has no `addr` (the virtual addresses, a.b.c.d/len)",
        ]
    );
    assert_eq!(
        parse(&format!("{OK}[vridsdep]\n")).unwrap_err(),
        vec!["5:1: freevrrpd.conf has no sections but `[VRID]`"]
    );
}

#[test]
fn values_freevrrpd_misread_are_refused_with_what_it_read() {
    let e = parse(&format!(
        "{OK}priority = 100 # backup\nvridsdep = 2x\n[VRID]\nserverid = 2\ninterface = em1\naddr = 10.1/8, 192.0.2.300/24\n"
    ))
    .unwrap_err();
    assert_eq!(
        e,
        vec![
            "5:12: `priority` must be a number from 1 to 255, not \"100 # backup\" (freevrrpd read it as 100); `#` starts a comment only in column 1",
            "6:12: `vridsdep` must be a number from 1 to 255, not \"2x\" (freevrrpd read it as 2)",
            "10:8: \"10.1\" is not a plain dotted-quad address: freevrrpd (inet_addr) read it as 10.0.0.1; write that",
            "10:16: \"192.0.2.300\" is not an IPv4 address",
        ]
    );
}

#[test]
fn same_vrid_on_two_interfaces_is_fine() {
    let (i, notes) = parse(&format!(
        "{OK}[VRID]\nserverid = 1\ninterface = em1\naddr = 10.0.0.1/24\n"
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(i.config.vrrp.len(), 2);
    assert!(notes.is_empty(), "{notes:#?}");
}

#[test]
fn load_reads_bytes_and_locates_non_utf8_values() {
    let missing = fixture("no-such.conf");
    let e = freevrrpd::load(&missing).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(
        e.0[0].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{}",
        e.0[0]
    );
    // A Latin-1 comment is fine: freevrrpd never looks at comments.
    let (i, _) = import("latin1.conf");
    assert_eq!(i.config.vrrp[0].vrid, 1);
    let mut f = tempfile::Builder::new()
        .suffix(".conf")
        .tempfile()
        .expect("temp file");
    f.write_all(
        b"[VRID]\nserverid = 1\ninterface = em0\naddr = 192.0.2.1/24\npassword = caf\xe9\n",
    )
    .expect("write");
    f.flush().expect("flush");
    let e = freevrrpd::load(f.path()).unwrap_err();
    assert_eq!(
        strip(f.path(), &e.0),
        vec!["5:15: this line is not UTF-8 text (only comments may use another character set)"]
    );
}
