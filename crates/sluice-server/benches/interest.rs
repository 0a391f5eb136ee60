//! What one evaluation of interest management costs: 1,000 players spread over a 1 km square
//! (≈ 30 within 100 m of each), radius 30 m for audio and 20 m for video, k = 8 and 4, each
//! player moving up to 1 m between evaluations (a 10 Hz tick of walking players), with the video
//! layers by distance.
//!
//! `cargo bench -p sluice-server --bench interest`

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use sluice_server::interest::{Interest, InterestSettings, Position};

fn world(players: usize, rng: &mut rand::rngs::StdRng) -> (Interest, Vec<(String, Position)>) {
    let mut interest = Interest::new(InterestSettings {
        audio_radius: 30.0,
        video_radius: 20.0,
        max_audible: 8,
        max_visible: 4,
        hysteresis: 2.0,
        video_layers_by_distance: true,
    });
    let mut positions = Vec::with_capacity(players);
    for n in 0..players {
        let id = format!("player-{n}");
        let p = Position::new(
            rng.random_range(0.0..1000.0),
            rng.random_range(0.0..1000.0),
            0.0,
        );
        interest.add_player(&id);
        interest.set_position(&id, Some(p));
        positions.push((id, p));
    }
    interest.evaluate();
    (interest, positions)
}

fn evaluate(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for players in [100, 1000] {
        let (mut interest, mut positions) = world(players, &mut rng);
        c.bench_function(
            &format!("interest: evaluate {players} walking players"),
            |b| {
                b.iter(|| {
                    for (id, p) in positions.iter_mut() {
                        p.x = (p.x + rng.random_range(-1.0..1.0)).clamp(0.0, 1000.0);
                        p.y = (p.y + rng.random_range(-1.0..1.0)).clamp(0.0, 1000.0);
                        interest.set_position(id, Some(*p));
                    }
                    (interest.evaluate(), interest.video_layers())
                })
            },
        );
    }
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
