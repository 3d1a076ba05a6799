//! The volume's D-Bus object on the system bus, seen with busctl.

use crate::host::say;
use crate::node::Node;
use crate::single::{self, MNT};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// `busctl` arguments naming the object of the volume on `dev`.
pub fn object_of(node: &mut Node, dev: &str) -> Result<String> {
    let uuid = node.must(&format!("blkid -s UUID -o value {dev}"))?;
    let hex = uuid.trim().replace('-', "").to_lowercase();
    Ok(format!("org.mxfs1.Volume.U{hex} /org/mxfs1/Volume"))
}

/// One property as `busctl get-property` prints it (`s "owner"`).
pub fn property(node: &mut Node, object: &str, name: &str) -> Result<String> {
    Ok(node
        .must(&format!(
            "busctl get-property {object} org.mxfs1.Volume {name}"
        ))?
        .trim()
        .to_string())
}

/// The number at the end of a busctl value (`t 42`).
pub fn number(v: &str) -> Result<u64> {
    v.split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("no number in {v:?}"))
}

/// The elements of a busctl array (`at 3 1 2 3`, `a(tt) 2 1 10 2 20`).
pub fn elements(v: &str) -> Vec<u64> {
    v.split_whitespace()
        .skip(2)
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// A value as `busctl get-property` printed it, without its leading type
/// signature (`t 1` is shown as `1`, `s "owner"` as `"owner"`), for
/// messages.
pub fn shown(value: &str) -> &str {
    value.split_once(' ').map_or(value, |(_, v)| v)
}

/// While mounted, `busctl introspect` lists the interface and
/// `busctl get-property` shows role, node, owner, epoch, members, fencing
/// state and PR capability, for root and for any user; after umount the
/// name is gone.
pub fn volume_object(node: &mut Node) -> Result<()> {
    let dev = single::fresh_volume(node)?;
    node.must(&format!("mount -t mxfs {dev} {MNT}"))?;
    let object = object_of(node, &dev)?;
    let r = (|| -> Result<()> {
        let intro = node.must(&format!("busctl introspect --no-pager {object}"))?;
        for member in [
            "org.mxfs1.Volume",
            ".Role",
            ".NodeId",
            ".OwnerNode",
            ".Epoch",
            ".Members",
            ".LockView",
            ".LockMembers",
            ".LockOwner",
            ".LockRecords",
            ".FencingState",
            ".PrCapability",
            ".Fenced",
        ] {
            ensure!(
                intro.contains(member),
                "busctl introspect lacks {member}:\n{intro}"
            );
        }
        let key = single::node_key(node)?;
        let want = [
            ("Role", "s \"owner\"".to_string()),
            ("NodeId", format!("t {key}")),
            ("OwnerNode", format!("t {key}")),
            ("Epoch", "t 1".to_string()),
            ("Members", format!("at 1 {key}")),
            ("FencingState", "s \"registered\"".to_string()),
            ("PrCapability", "s \"scsi\"".to_string()),
            ("Device", format!("s \"{dev}\"")),
            ("Mountpoint", format!("s \"{MNT}\"")),
        ];
        let mut shown = Vec::new();
        for (name, expected) in want {
            let got = property(node, &object, name)?;
            ensure!(
                got == expected,
                "{name}: busctl says {got:?}, expected {expected:?}"
            );
            shown.push(format!("{name}={got}"));
        }
        // The DLM, alone: the first view of epoch 1, this node its only
        // member and the holder of `owner` (it shows within a second or
        // two of the mount), its two locks (`owner` and its marker)
        // recorded in the lockstate.
        let lock_want = [
            ("LockView", format!("t {}", (1u64 << 32) | 1)),
            ("LockMembers", format!("at 1 {key}")),
            ("LockOwner", format!("t {key}")),
            ("LockRecords", "x 2".to_string()),
        ];
        let mut lock_got = Vec::new();
        for _ in 0..20 {
            lock_got = lock_want
                .iter()
                .map(|(name, _)| property(node, &object, name))
                .collect::<Result<_>>()?;
            if lock_got.iter().zip(&lock_want).all(|(g, (_, w))| g == w) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for (got, (name, expected)) in lock_got.iter().zip(&lock_want) {
            ensure!(
                got == expected,
                "{name}: busctl says {got:?}, expected {expected:?}"
            );
            shown.push(format!("{name}={got}"));
        }
        say(format!("busctl get-property: {}", shown.join(", ")));
        let marker = format!("owner-node:{key:016x}");
        let on_disk = single::marker_records_on_disk(node, &dev)?;
        ensure!(
            on_disk == [marker.clone()],
            "the lockstate on the device should record the owner's marker lock {marker}: {on_disk:?}"
        );
        say(format!("lock record on the device: {marker}"));
        let user = node.sh(
            &format!("runuser -u tests -- busctl get-property {object} org.mxfs1.Volume Role"),
            Duration::from_secs(30),
        )?;
        ensure!(
            user.ok() && user.stdout.trim() == "s \"owner\"",
            "an unprivileged user should read properties: {user:?}"
        );
        Ok(())
    })();
    node.must(&format!("umount {MNT}"))?;
    r?;
    // A node that leaves clears its records.
    let left = single::marker_records_on_disk(node, &dev)?;
    ensure!(
        left.is_empty(),
        "lock records stayed on the device after umount: {left:?}"
    );
    let name = object
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let listed = node.must(&format!("busctl list --no-pager | grep -c {name} || true"))?;
    ensure!(
        listed.trim() == "0",
        "{name} is still on the bus after umount"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{elements, number, shown};

    #[test]
    fn busctl_values() {
        assert_eq!(number("t 12345").unwrap(), 12345);
        assert_eq!(elements("at 3 1 2 3"), [1, 2, 3]);
        assert_eq!(elements("a(tt) 2 10 500 20 1500"), [10, 500, 20, 1500]);
        assert!(elements("at 0").is_empty());
    }

    #[test]
    fn shown_drops_the_type_signature() {
        assert_eq!(shown("t 1"), "1");
        assert_eq!(shown("s \"owner\""), "\"owner\"");
        assert_eq!(shown("at 2 17 42"), "2 17 42");
        assert_eq!(shown("b"), "b");
    }
}
