//! Small helpers over `prometheus_client` for the collectors of the server,
//! the clients and the registry (feature `metrics`): one family of const
//! values per call, label values escaped, and a whole registry rendered as
//! the text a Prometheus server scrapes.
//!
//! The collectors count nothing themselves: at each scrape they read the
//! counters the code keeps anyway and hand them to these helpers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`render`]'s text: OpenMetrics 1.0, which
/// Prometheus asks for first and parses natively.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets' targets in microseconds, 50 µs to 10 s in 1-2.5-5
/// steps. The server's histogram uses the bucket bounds nearest to these.
pub(crate) const LATENCY_TARGETS_US: [f64; 17] = [
    50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6,
    1e7,
];

/// A label set of (name, value) pairs; values escaped on the way out
/// (`prometheus_client` writes them as given).
pub(crate) struct Labels<'a>(pub &'a [(&'static str, &'a str)]);

impl prometheus_client::encoding::EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        let escaped: Vec<(&str, Cow<'_, str>)> =
            self.0.iter().map(|(k, v)| (*k, escape(v))).collect();
        escaped.as_slice().encode(encoder)
    }
}

/// Escapes a label value as the text format wants: `\`, `"` and newline.
pub(crate) fn escape(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One counter family: `name` gets `_total` (and the unit) from the encoder.
pub(crate) fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: impl IntoIterator<Item = (&'a [(&'static str, &'a str)], u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&Labels(labels))?)?;
    }
    Ok(())
}

/// One counter without labels.
pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    v: u64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// One gauge family.
pub(crate) fn gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: impl IntoIterator<Item = (&'a [(&'static str, &'a str)], i64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(v).encode(m.encode_family(&Labels(labels))?)?;
    }
    Ok(())
}

/// One gauge without labels.
pub(crate) fn gauge<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    v: V,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// One histogram's samples: buckets as (upper bound, count in the bucket,
/// not cumulative), the last bound `f64::MAX` (+Inf), and the sum.
pub(crate) struct Hist<'a> {
    pub labels: &'a [(&'static str, &'a str)],
    pub buckets: &'a [(f64, u64)],
    pub sum: f64,
}

/// One histogram family.
pub(crate) fn histograms<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: impl IntoIterator<Item = Hist<'a>>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
    for h in values {
        let count = h.buckets.iter().map(|b| b.1).sum();
        m.encode_family(&Labels(h.labels))?.encode_histogram(
            h.sum,
            count,
            h.buckets,
            None::<&HashMap<usize, Exemplar<Vec<(String, String)>, f64>>>,
        )?;
    }
    Ok(())
}

/// The text of a registry holding just `collector`, `# EOF` included.
#[cfg_attr(not(feature = "registry"), allow(dead_code))]
pub(crate) fn render(collector: impl Collector) -> String {
    render_all(vec![Box::new(collector)])
}

/// A collector shared with other code.
#[derive(Debug)]
pub(crate) struct SharedCollector(pub Arc<dyn Collector>);

impl Collector for SharedCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
}

/// The text of a registry holding `collectors`, `# EOF` included.
pub(crate) fn render_all(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut out = String::with_capacity(8192);
    // Writing to a String fails only if a collector does.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        log::error!("metrics: cannot encode: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("tcp@a:1"), "tcp@a:1");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
