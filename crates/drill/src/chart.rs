//! The SVG timeline of a run: attacker requests reaching the password check against those
//! refused before it, and legitimate logins, per second.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::{RunReport, TimelineSecond};

/// Picks one line's value out of a second of the timeline.
type Count = fn(&TimelineSecond) -> usize;

/// Draws `run`'s timeline into `path`.
pub fn timeline(run: &RunReport, title: &str, path: &Path) -> anyhow::Result<()> {
    let plot = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let seconds = run.timeline.len().max(1) as u32;
    let peak = run
        .timeline
        .iter()
        .map(|s| {
            s.attacker_allowed
                .max(s.attacker_denied)
                .max(s.attacker_other)
                .max(s.legit_succeeded)
        })
        .max()
        .unwrap_or(0)
        .max(1) as u32;
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        // Headroom above the peak keeps the legend off the lines.
        .build_cartesian_2d(0u32..seconds, 0u32..peak + peak / 2 + 1)
        .map_err(|e| plot(&e))?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("requests per second")
        .draw()
        .map_err(|e| plot(&e))?;
    let series: [(&str, RGBColor, Count); 4] = [
        ("attacker: reached the password check", RED, |s| {
            s.attacker_allowed
        }),
        ("attacker: denied before hashing", BLUE, |s| {
            s.attacker_denied
        }),
        ("attacker: shed or failed", RGBColor(150, 150, 150), |s| {
            s.attacker_other
        }),
        ("legitimate logins", RGBColor(0, 140, 0), |s| {
            s.legit_succeeded
        }),
    ];
    for (label, colour, value) in series {
        let points = run
            .timeline
            .iter()
            .map(|s| (s.second as u32, value(s) as u32));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| plot(&e))?
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
        .map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}
