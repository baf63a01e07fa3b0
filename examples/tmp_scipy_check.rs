// One-off comparison with scipy.linalg.subspace_angles (not committed).
use llfc::analysis::subspace::principal_angles;
use ndarray::Array2;
fn main() {
    let (n, p, q) = (30usize, 6usize, 4usize);
    for (case, eps) in [(0, 0.0f64), (1, 1e-9), (2, 1e-5), (3, 0.3), (4, 3.0)] {
        let a = Array2::from_shape_fn((n, p), |(i, j)| {
            (1.3 * i as f64 + 0.7 * (j * j) as f64 + 0.1).sin()
        });
        let b = Array2::from_shape_fn((n, q), |(i, j)| {
            let base: f64 = (0..p)
                .map(|k| a[[i, k]] * ((k + 2 * j) as f64 * 0.37).cos())
                .sum();
            base + eps * (0.9 * i as f64 * (j + 1) as f64).cos()
        });
        let t = principal_angles(a.view(), b.view()).unwrap();
        println!(
            "{case} {}",
            t.iter()
                .map(|v| format!("{v:.17e}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
