//! The SVG timeline of a run, per second, in two panels with their own scales: the attacker's
//! requests (reaching the password check, challenged, denied before it, shed or failed) above,
//! the legitimate users' (logged in, challenged) below, where they would otherwise be
//! invisible next to a flood.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{RunReport, TimelineSecond};

/// Picks one line's value out of a second of the timeline.
type Count = fn(&TimelineSecond) -> usize;

/// One line: its label, colour and value.
type Series = (&'static str, RGBColor, Count);

const GREY: RGBColor = RGBColor(150, 150, 150);
const GREEN: RGBColor = RGBColor(0, 140, 0);
const ORANGE: RGBColor = RGBColor(230, 140, 0);

/// Draws `run`'s timeline into `path`.
pub fn timeline(run: &RunReport, title: &str, path: &Path) -> anyhow::Result<()> {
    let plot = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| plot(&e))?;
    let (attacker, legit) = root.split_vertically(380);
    let attacker_series: [Series; 4] = [
        ("attacker: reached the password check", RED, |s| {
            s.attacker_allowed
        }),
        ("attacker: challenged", ORANGE, |s| s.attacker_challenged),
        ("attacker: denied before hashing", BLUE, |s| {
            s.attacker_denied
        }),
        ("attacker: shed or failed", GREY, |s| s.attacker_other),
    ];
    let legit_series: [Series; 2] = [
        ("legitimate: logged in", GREEN, |s| s.legit_succeeded),
        ("legitimate: challenged", ORANGE, |s| s.legit_challenged),
    ];
    panel(&attacker, run, &attacker_series).map_err(|e| plot(&e))?;
    panel(&legit, run, &legit_series).map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}

/// One panel: `series` per second, scaled to their own peak.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &RunReport,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let seconds = run.timeline.len().max(1) as u32;
    let peak = run
        .timeline
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, value)| value(s)))
        .max()
        .unwrap_or(0)
        .max(1) as u32;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        // Headroom above the peak keeps the legend off the lines.
        .build_cartesian_2d(0u32..seconds, 0u32..peak + peak / 2 + 1)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("requests per second")
        .draw()?;
    for &(label, colour, value) in series {
        let points = run
            .timeline
            .iter()
            .map(|s| (s.second as u32, value(s) as u32));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
}
