//! The VM table's size (--max-vms) and what it takes.

use super::*;

/// The pinned VM table's size and how many entries it holds.
fn vm_table(lab: &Lab) -> (u32, usize) {
    use aya::maps::{HashMap, Map, MapData};
    let path = Pins::new(&lab.inst.name).unwrap().maps().join(MAP_VMS);
    let data = MapData::from_pin(&path).expect("the pinned VM table");
    let size = data.info().unwrap().max_entries();
    let map: HashMap<MapData, u32, eip_common::maps::Vm> = HashMap::try_from(Map::HashMap(data)).unwrap();
    (size, map.keys().count())
}

#[test]
fn the_vm_table_takes_what_max_vms_allows() {
    // Four entries, two kept for the dynamic range's leases: room for two of three lines.
    const TWO: &str = "192.168.6.200-192.168.6.201";
    let mut lab = Lab::with(3, &["--max-vms", "4", "--dhcp-range", TWO]);
    let full = "the VM table is full: 4 entries (--max-vms), 2 of them kept for the dynamic range's leases";
    let log = lab.log();
    assert!(log.contains(&format!("skipped: {full}")), "{log}");
    let hosts: Vec<serde_json::Value> = serde_json::from_str(&lab.ok(&["host", "list", "--json"])).unwrap();
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names, ["vm1", "vm2"]);
    assert_eq!(vm_table(&lab), (4, 2));
    let out = lab.cli(&["host", "add", "52:54:00:00:00:09", "192.168.6.99"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {full}")
    );
    lab.ok(&["bind", "203.0.113.10", "vm2"]);
    assert!(pings(&lab.topo.outside, eip(10), 1), "{}", lab.log());

    // A larger range at the next start leaves room for one reservation of the two: the
    // daemon refuses to start, and the dataplane keeps serving what it had.
    lab.stop();
    let mut owned = daemon_args(&lab.hosts);
    owned.extend(["--max-vms", "4", "--dhcp-range", "192.168.6.200-192.168.6.202"].map(String::from));
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let err = lab
        .inst
        .start(&args)
        .err()
        .expect("a start with too small a VM table");
    assert!(
        err.to_string().contains(
            "a VM table of 4 entries (--max-vms) is too small: the store holds 2 reservations and 3 entries are kept for the dynamic range's leases"
        ),
        "{err}"
    );
    assert!(pings(&lab.topo.outside, eip(10), 1));

    // A start asking for a smaller table keeps the pinned one's four entries, and says so.
    lab.extra = vec!["--max-vms", "2", "--dhcp-range", TWO];
    lab.start();
    assert!(
        lab.log()
            .contains("the pinned maps keep the sizes they were created with")
    );
    assert_eq!(vm_table(&lab), (4, 2));
    assert_eq!(lab.list().len(), 1);
}
