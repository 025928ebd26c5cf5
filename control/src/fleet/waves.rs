//! Wave plans (`--waves 1,25%,100%`) and label selectors (`--selector k=v`).

use std::collections::BTreeMap;

use super::{FleetError, check_name};

/// One wave's size: how many gateways have the change once it is realized
/// (cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveSize {
    /// This many gateways.
    Count(usize),
    /// This percentage of the selected gateways (rounded up).
    Percent(u32),
}

/// Most waves a rollout may have.
pub const MAX_WAVES: usize = 32;

/// Parses `1,25%,100%`: each entry a count or a percentage, cumulative and
/// growing; the last must reach every gateway (`100%`), so no rollout ends
/// with part of the fleet left behind by mistake.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>, FleetError> {
    let bad = |why: &str| FleetError::Usage(format!("--waves {text:?}: {why}"));
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let size = if let Some(p) = part.strip_suffix('%') {
            let p: u32 = p.parse().map_err(|_| bad("a percentage is 1%..100%"))?;
            if !(1..=100).contains(&p) {
                return Err(bad("a percentage is 1%..100%"));
            }
            WaveSize::Percent(p)
        } else {
            let n: usize = part
                .parse()
                .map_err(|_| bad("each wave is a count (1) or a percentage (25%)"))?;
            if n == 0 {
                return Err(bad("a wave of 0 gateways"));
            }
            WaveSize::Count(n)
        };
        out.push(size);
    }
    if out.len() > MAX_WAVES {
        return Err(bad(&format!("more than {MAX_WAVES} waves")));
    }
    if out.last() != Some(&WaveSize::Percent(100)) {
        return Err(bad("the last wave must be 100%"));
    }
    Ok(out)
}

/// Splits `gateways` (in order) into waves: wave `i` brings the number of
/// changed gateways to its size (at least one more than the wave before);
/// waves that would add nobody are dropped.
pub fn plan(gateways: &[String], sizes: &[WaveSize]) -> Vec<Vec<String>> {
    let n = gateways.len();
    let mut waves = Vec::new();
    let mut done = 0usize;
    for size in sizes {
        let target = match *size {
            WaveSize::Count(c) => c,
            WaveSize::Percent(p) => (n * p as usize).div_ceil(100),
        }
        .min(n);
        if target > done {
            waves.push(gateways[done..target].to_vec());
            done = target;
        }
    }
    waves
}

/// Parses `k=v` label pairs (a selector, or an agent's labels).
pub fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, FleetError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| FleetError::Usage(format!("{pair:?}: a label is key=value")))?;
        check_name("label key", k)?;
        check_name("label value", v)?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gw{i}")).collect()
    }

    #[test]
    fn waves_are_cumulative_and_end_with_everyone() {
        let sizes = parse_waves("1,25%,100%").expect("waves");
        let waves = plan(&names(6), &sizes);
        assert_eq!(
            waves.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1, 4]
        );
        let waves = plan(&names(24), &sizes);
        assert_eq!(
            waves.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 5, 18]
        );
        // One gateway: one wave.
        assert_eq!(plan(&names(1), &sizes).len(), 1);
        assert!(plan(&[], &sizes).is_empty());
        for bad in ["", "0,100%", "1,50%", "101%,100%", "x,100%", "1,,100%"] {
            assert!(parse_waves(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked_pairs() {
        let l = parse_labels(&["cluster=par1".into(), "site=a".into()]).expect("labels");
        assert_eq!(l.get("cluster").map(String::as_str), Some("par1"));
        assert!(parse_labels(&["cluster".into()]).is_err());
        assert!(parse_labels(&["a/b=c".into()]).is_err());
    }
}
