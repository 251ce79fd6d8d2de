//! One measured figure, as the table prints it and `--json` writes it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// The family: `kernel`, `throughput`, `control`, `dhcp`, `memory`, `limits`.
    pub bench: String,
    /// What was measured within it: `ingress TCP`, `iptables`...
    pub variant: String,
    pub bindings: Option<u64>,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The variant this one is compared with, measured in the same run.
    pub ratio_to: Option<String>,
    pub ratio: Option<f64>,
}

impl Figure {
    pub fn new(
        bench: &str,
        variant: &str,
        bindings: Option<u64>,
        metric: &str,
        value: f64,
        unit: &str,
    ) -> Self {
        Figure {
            bench: bench.into(),
            variant: variant.into(),
            bindings,
            metric: metric.into(),
            value,
            unit: unit.into(),
            ratio_to: None,
            ratio: None,
        }
    }

    pub fn against(mut self, baseline: &str, baseline_value: f64) -> Self {
        self.ratio_to = Some(baseline.into());
        self.ratio = (baseline_value > 0.0).then(|| self.value / baseline_value);
        self
    }
}

/// The table on stdout.
pub fn table(figures: &[Figure]) -> String {
    let mut s = format!(
        "{:<10} {:<48} {:>9} {:<14} {:>12} {:<6} {:<16} {:>7}\n",
        "bench", "variant", "bindings", "metric", "value", "unit", "ratio to", "ratio"
    );
    for f in figures {
        s += &format!(
            "{:<10} {:<48} {:>9} {:<14} {:>12.1} {:<6} {:<16} {:>7}\n",
            f.bench,
            f.variant,
            f.bindings.map_or(String::new(), |b| b.to_string()),
            f.metric,
            f.value,
            f.unit,
            f.ratio_to.as_deref().unwrap_or(""),
            f.ratio.map_or(String::new(), |r| format!("{r:.2}")),
        );
    }
    s
}
