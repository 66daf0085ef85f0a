//! `geerpc watch`: the instances a registry or etcd lists, then each change
//! as it happens (added, removed, changed), one line each with the time,
//! until Ctrl-C or SIGTERM. It follows the discovery's own change signal
//! (the registry's long poll, etcd's watch), so a change is printed as soon
//! as the discovery learns it, not at a polling period.

use std::collections::BTreeMap;
use std::io::Write;

use crossbeam_channel::select;
use geerpc::xclient::Instance;

use crate::exit::{Failure, Kind};
use crate::{describe, Found, Source};

pub fn run(
    source: Source,
    service: Option<String>,
    reach: &crate::creds::Reach,
) -> Result<(), Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Before the discovery starts, so that an early signal is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("geerpc-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = stop_tx.send(());
            }
        })?;
    let found = Found::following(
        source.registry.as_deref(),
        source.etcd.as_deref(),
        service.as_deref(),
        reach,
    )?;
    let changed = found
        .discovery
        .watch()
        .ok_or_else(|| Failure::new(Kind::Other, "this discovery cannot be watched"))?;
    let mut out = std::io::stdout().lock();
    let mut known = by_addr(&found.instances()?);
    writeln!(out, "{}  watching {}", now(), found.source)?;
    if known.is_empty() {
        writeln!(out, "{}  (no instance)", now())?;
    }
    for i in known.values() {
        writeln!(out, "{}  listed   {}", now(), describe(i))?;
    }
    out.flush()?;
    loop {
        select! {
            recv(stop_rx) -> _ => break,
            recv(changed) -> msg => {
                if msg.is_err() {
                    return Err(Failure::new(Kind::Discovery, format!("{} stopped", found.source)));
                }
                let now_listed = by_addr(&found.instances()?);
                print_changes(&mut out, &known, &now_listed)?;
                out.flush()?;
                known = now_listed;
            }
        }
    }
    handle.close();
    Ok(())
}

fn by_addr(instances: &[Instance]) -> BTreeMap<String, Instance> {
    instances
        .iter()
        .map(|i| (i.addr.clone(), i.clone()))
        .collect()
}

/// One line per instance added, removed or changed from `before` to `after`.
fn print_changes(
    out: &mut impl Write,
    before: &BTreeMap<String, Instance>,
    after: &BTreeMap<String, Instance>,
) -> std::io::Result<()> {
    for (addr, i) in before {
        if !after.contains_key(addr) {
            writeln!(out, "{}  removed  {}", now(), describe(i))?;
        }
    }
    for (addr, i) in after {
        match before.get(addr) {
            None => writeln!(out, "{}  added    {}", now(), describe(i))?,
            Some(old) if old != i => writeln!(out, "{}  changed  {}", now(), describe(i))?,
            Some(_) => {}
        }
    }
    Ok(())
}

/// The time now, RFC 3339 in UTC with milliseconds.
fn now() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_added_removed_and_changed_lines() {
        let a = Instance::new("tcp@h:1");
        let b = Instance::new("tcp@h:2");
        let before = by_addr(&[a.clone(), b.clone()]);
        let after = by_addr(&[a.clone().with_weight(5), Instance::new("tcp@h:3")]);
        let mut out = Vec::new();
        print_changes(&mut out, &before, &after).unwrap();
        let text = String::from_utf8(out).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(kinds, ["removed", "changed", "added"], "{text}");
        assert!(
            text.contains("tcp@h:2") && text.contains("weight=5"),
            "{text}"
        );
        let mut out = Vec::new();
        print_changes(&mut out, &after, &after).unwrap();
        assert!(out.is_empty());
    }
}
