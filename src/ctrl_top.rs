//! `wirelens top`: a live terminal view of a control plane: alerts, services
//! worst first (with a sparkline of each one's recent request RTT), the worst
//! flows. Refreshes every second; `q` quits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use wirelens_ctrl::agg::ServiceSummary;
use wirelens_ctrl::alerts::Alert;
use wirelens_ctrl::client::Client;
use wirelens_ctrl::store::{FlowRow, NodeInfo};
use wirelens_ctrl::utc;
use wirelens_output::{human_ns, NsStyle};

use crate::ctrl_cli::{flow_row, service_row, CtrlUrl, EXIT_CTRL, FLOW_HEAD, SERVICE_HEAD};
use crate::exit;

/// Live view of services and worst flows from a control plane (q to quit).
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub url: CtrlUrl,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Only data since: an age (15m, 2h) or ns since the Unix epoch.
    #[arg(long)]
    pub since: Option<String>,
}

/// Samples kept per service for its RTT sparkline (one per refresh).
const TREND: usize = 30;
/// Each sample: the service's request RTT p90 over this trailing window.
const TREND_WINDOW: &str = "1m";
/// The sparkline's levels, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `v` as a sparkline scaled from its minimum to its maximum, then its last
/// value: `▁▁▁▂▇█ 120ms`; empty without samples.
fn sparkline(v: &VecDeque<u64>) -> String {
    let (Some(&lo), Some(&hi), Some(&last)) = (v.iter().min(), v.iter().max(), v.back()) else {
        return String::new();
    };
    let span = hi - lo;
    let bars: String = v
        .iter()
        .map(|&x| {
            let i = if span == 0 {
                0
            } else {
                ((x - lo) as u128 * (BARS.len() as u128 - 1) / span as u128) as usize
            };
            BARS[i.min(BARS.len() - 1)]
        })
        .collect();
    format!("{bars} {}", human_ns(last, NsStyle::Fine))
}

#[derive(Default)]
struct View {
    services: Vec<ServiceSummary>,
    /// Per service, its request RTT p90 over the last [`TREND_WINDOW`], one
    /// sample per refresh.
    trend: HashMap<String, VecDeque<u64>>,
    flows: Vec<FlowRow>,
    alerts: Vec<Alert>,
    nodes: usize,
    error: Option<String>,
    updated: Option<u64>,
}

fn refresh(c: &Client, since: &str, v: &mut View) {
    let q = |route: &str, extra: &str| format!("{route}?{extra}{since}");
    let r = (|| {
        let services: Vec<ServiceSummary> =
            c.get(&q("/api/v1/services", "sort=worst&limit=50&paths=0"))?;
        let flows: Vec<FlowRow> = c.get(&q("/api/v1/flows", "sort=worst&limit=30"))?;
        let alerts: Vec<Alert> = c.get(&q("/api/v1/alerts", "limit=20"))?;
        let nodes: Vec<NodeInfo> = c.get("/api/v1/nodes")?;
        let recent: Vec<ServiceSummary> = c.get(&format!(
            "/api/v1/services?sort=worst&limit=50&paths=0&since={TREND_WINDOW}"
        ))?;
        Ok::<_, wirelens_ctrl::client::ClientError>((services, flows, alerts, nodes.len(), recent))
    })();
    match r {
        Ok((s, f, a, n, recent)) => {
            for r in recent {
                if let Some(p90) = r.rtt_server.p90_ns {
                    let t = v.trend.entry(r.service).or_default();
                    if t.len() >= TREND {
                        t.pop_front();
                    }
                    t.push_back(p90);
                }
            }
            v.services = s;
            v.flows = f;
            v.alerts = a;
            v.nodes = n;
            v.error = None;
            v.updated = Some(wirelens_ctrl::now_ns());
        }
        Err(e) => v.error = Some(e.to_string()),
    }
}

fn table<'a>(title: String, head: &'a [&'a str], rows: Vec<Vec<String>>) -> Table<'a> {
    let widths: Vec<Constraint> = head
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let w = rows
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.len());
            Constraint::Length(w as u16)
        })
        .collect();
    Table::new(rows.into_iter().map(Row::new), widths)
        .header(Row::new(head.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::TOP).title(title))
        .column_spacing(2)
}

fn draw(f: &mut Frame<'_>, url: &str, v: &View) {
    let alert_h = (v.alerts.len().min(6) as u16).max(1) + 1;
    let [head, alerts, services, flows] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(alert_h),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(f.area());
    let status = match (&v.error, v.updated) {
        (Some(e), _) => e.clone(),
        (None, Some(t)) => format!("updated {}", utc(t)),
        (None, None) => "connecting...".into(),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "wirelens top — {url} — {} nodes, {} services, {} alerts — q to quit",
                v.nodes,
                v.services.len(),
                v.alerts.len()
            ))
            .style(Style::new().add_modifier(Modifier::BOLD)),
            Line::from(status),
        ]),
        head,
    );
    let alert_lines: Vec<Line<'_>> = if v.alerts.is_empty() {
        vec![Line::from("no alerts")]
    } else {
        v.alerts
            .iter()
            .take(6)
            .map(|a| {
                Line::from(format!(
                    "{} {} since {} [{}]: {}",
                    a.rule,
                    a.service,
                    utc(a.since_ns),
                    a.nodes.join(","),
                    a.summary
                ))
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(alert_lines).block(Block::new().borders(Borders::TOP).title("alerts")),
        alerts,
    );
    let mut head: Vec<&str> = SERVICE_HEAD.to_vec();
    head.push("rtt srv p90 (1m), trend");
    let rows = v
        .services
        .iter()
        .map(|s| {
            let mut row = service_row(s);
            row.push(v.trend.get(&s.service).map(sparkline).unwrap_or_default());
            row
        })
        .collect();
    f.render_widget(
        table("services (worst first)".into(), &head, rows),
        services,
    );
    f.render_widget(
        table(
            "worst flows".into(),
            &FLOW_HEAD,
            v.flows.iter().map(flow_row).collect(),
        ),
        flows,
    );
}

fn run_loop(
    term: &mut DefaultTerminal,
    client: &Client,
    since: &str,
    every: Duration,
) -> std::io::Result<()> {
    let mut v = View::default();
    let url = client.base().to_string();
    loop {
        refresh(client, since, &mut v);
        term.draw(|f| draw(f, &url, &v))?;
        let deadline = Instant::now() + every;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if event::poll(left)? {
                match event::read()? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => {
                        let quit = matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                            || (k.code == KeyCode::Char('c')
                                && k.modifiers.contains(KeyModifiers::CONTROL));
                        if quit {
                            return Ok(());
                        }
                    }
                    Event::Resize(..) => {
                        term.draw(|f| draw(f, &url, &v))?;
                    }
                    _ => {}
                }
            }
        }
    }
}

pub fn run(a: &TopArgs) -> u8 {
    let client = a.url.client(Duration::from_secs(3));
    let since = a
        .since
        .as_deref()
        .map(|s| format!("&since={s}"))
        .unwrap_or_default();
    // Fail before taking over the terminal when nothing answers.
    if let Err(e) = client.get::<serde_json::Value>("/healthz") {
        eprintln!("wirelens: {e}");
        return EXIT_CTRL;
    }
    let every = Duration::from_secs_f64(a.interval.clamp(0.1, 3600.0));
    let mut term = ratatui::init();
    let r = run_loop(&mut term, &client, &since, every);
    ratatui::restore();
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("wirelens: top: {e}");
            exit::INPUT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_from_min_to_max() {
        let v: VecDeque<u64> = [40, 40, 41, 120, 120]
            .iter()
            .map(|ms| ms * 1_000_000)
            .collect();
        assert_eq!(sparkline(&v), "▁▁▁██ 120.0ms");
        let flat: VecDeque<u64> = [5_000_000; 3].into_iter().collect();
        assert_eq!(sparkline(&flat), "▁▁▁ 5.00ms");
        assert_eq!(sparkline(&VecDeque::new()), "");
    }
}
