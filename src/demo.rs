//! `edgefilter demo` (being written).

use tokio::sync::watch;

pub async fn run(
    _args: crate::config::DemoArgs,
    _shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet")
}
