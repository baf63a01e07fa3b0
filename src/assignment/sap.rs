//! Shortest augmenting paths (Crouse 2016): Dijkstra-like scans of reduced costs from a free
//! row until an unmatched column is reached, then the path is flipped and the potentials are
//! updated so that the reduced costs stay non-negative and the new matching tight.

use super::kernels::{find_at, ld, scan_contiguous, scan_indexed, BLOCK};
use super::native::{Costs, State, NONE};
use crate::error::{Error, Result};
use crate::float::Float;

/// Scratch space of the shortest augmenting path search, allocated once per solve.
///
/// Unvisited ("todo") columns are kept in a compact list in increasing column order, with
/// their potentials and tentative distances stored alongside, so that the scan of a row reads
/// contiguous arrays and the row itself in increasing order. A visited column is killed in
/// place (`vt = −∞`, `dt = +∞`: it can neither improve nor be selected again) and the list is
/// compacted when more than a quarter of it is dead. Predecessors are not stored during the scans
/// (that would make them branchy): the predecessor of a column on the final path is recovered
/// as the first scanned row whose relaxation reproduces the column's distance bit for bit.
pub(super) struct Sap {
    todo: Vec<usize>,
    vt: Vec<f64>,
    dt: Vec<f64>,
    /// Unmatched columns.
    free_cols: Vec<usize>,
    /// Position of each live column in the todo list (valid once compacted).
    pos: Vec<usize>,
    /// Scanned rows in order, with their offsets `h = d_i − u_i`.
    sr: Vec<(usize, f64)>,
    /// Visited columns with the row matched to them (at visit time) and their distances.
    sc: Vec<(usize, usize, f64)>,
    /// Block minima of the last scan (see [`BLOCK`]).
    bm: Vec<f64>,
}

impl Sap {
    pub(super) fn new(nc: usize, row4col: &[usize]) -> Self {
        Self {
            free_cols: (0..nc).filter(|&j| row4col[j] == NONE).collect(),
            pos: vec![0; nc],
            todo: Vec::with_capacity(nc),
            vt: Vec::with_capacity(nc),
            dt: vec![0.0; nc],
            sr: Vec::with_capacity(nc),
            sc: Vec::with_capacity(nc),
            bm: vec![0.0; nc.div_ceil(BLOCK)],
        }
    }

    /// Augment the matching along a shortest path from the free row `r0` (Crouse 2016).
    /// Returns the number of rows scanned (the length of the search).
    pub(super) fn augment<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        st: &mut State,
        r0: usize,
    ) -> Result<usize> {
        let nc = c.nc;
        self.todo.clear();
        self.todo.extend(0..nc);
        self.vt.clear();
        self.vt.extend_from_slice(&st.v);
        self.dt[..nc].fill(f64::INFINITY);
        self.sc.clear();
        self.sr.clear();
        let mut m = nc; // positions in use
        let mut live = nc;
        let mut contiguous = true;
        let mut i = r0;
        let mut mu = 0.0;
        let sink = loop {
            let h = mu - st.u[i];
            self.sr.push((i, h));
            stat!(s => s.steps += 1; s.columns_scanned += m);
            let row = c.row(i);
            let (vt, dt) = (&self.vt[..m], &mut self.dt[..m]);
            let sm = if contiguous {
                scan_contiguous::<T, NEG>(&row[..m], vt, dt, h, &mut self.bm)
            } else {
                scan_indexed::<T, NEG>(row, &self.todo[..m], vt, dt, h, &mut self.bm)
            };
            let (best, k) = (sm.best, sm.first);
            stat!(s => s.tie_scans += usize::from(sm.tie));
            if best == f64::INFINITY {
                return Err(Error::Infeasible);
            }
            // Prefer an unmatched column among those at the minimal distance (SciPy's rule; it
            // keeps all-equal matrices linear per augmentation). Other positions need looking
            // at only when the scan saw a tie: then check the unmatched columns directly when
            // they are few, otherwise the ties after the first minimum.
            let j = self.todo[k];
            let free_hit = if st.row4col[j] == NONE {
                Some(j)
            } else if !sm.tie {
                None
            } else if self.free_cols.len() * 4 <= m {
                let dt = &self.dt;
                let pos = &self.pos;
                self.free_cols
                    .iter()
                    .copied()
                    .find(|&f| dt[if contiguous { f } else { pos[f] }] == best)
            } else {
                // Other ties at `best` after `k`, found chunk by chunk (branch-free tests).
                let dt = &self.dt[..m];
                let mut q = k + 1;
                let mut hit = None;
                while let Some(o) = find_at(&dt[q..], best) {
                    if st.row4col[self.todo[q + o]] == NONE {
                        hit = Some(self.todo[q + o]);
                        break;
                    }
                    q += o + 1;
                }
                hit
            };
            if let Some(f) = free_hit {
                mu = best;
                let t = self.free_cols.iter().position(|&x| x == f).unwrap_or(0);
                break self.free_cols.swap_remove(t);
            }
            debug_assert!(st.row4col[j] != NONE);
            mu = best;
            // Visit column j: record its distance, kill its slot, continue from its row.
            self.sc.push((j, st.row4col[j], best));
            self.vt[k] = f64::NEG_INFINITY;
            self.dt[k] = f64::INFINITY;
            live -= 1;
            i = st.row4col[j];
            if live * 4 < m * 3 && m > 32 {
                let mut w = 0;
                for q in 0..m {
                    if self.vt[q] != f64::NEG_INFINITY {
                        self.pos[self.todo[q]] = w;
                        self.todo[w] = self.todo[q];
                        self.vt[w] = self.vt[q];
                        self.dt[w] = self.dt[q];
                        w += 1;
                    }
                }
                m = w;
                contiguous = false;
            }
        };
        stat!(s => s.augmentations += 1; s.max_path = s.max_path.max(self.sr.len()));
        // Flip the path (before the dual update: predecessors are recomputed from st.v).
        let mut j = sink;
        let mut dj = mu;
        loop {
            let i = self.predecessor::<T, NEG>(c, &st.v, j, dj);
            st.row4col[j] = i;
            let prev = std::mem::replace(&mut st.col4row[i], j);
            if i == r0 {
                break;
            }
            j = prev;
            dj = self
                .sc
                .iter()
                .find(|&&(q, _, _)| q == j)
                .map_or(mu, |&(_, _, d)| d);
        }
        // Dual update: u_r0 += mu; for visited columns j (reached at d_j) and their rows:
        // u_i += mu − d_j, v_j −= mu − d_j. Keeps reduced costs ≥ 0 and the path tight.
        st.u[r0] += mu;
        for &(j, i, dj) in &self.sc {
            let delta = mu - dj;
            st.u[i] += delta;
            st.v[j] -= delta;
        }
        Ok(self.sr.len())
    }

    /// The first scanned row whose relaxation of column `j` gives exactly `dj`.
    #[inline(never)]
    fn predecessor<T: Float, const NEG: bool>(
        &self,
        c: Costs<'_, T>,
        v: &[f64],
        j: usize,
        dj: f64,
    ) -> usize {
        let mut first_min = (f64::INFINITY, NONE);
        for &(i, h) in &self.sr {
            let r = (ld::<T, NEG>(c.row(i)[j]) - v[j]) + h;
            if r == dj {
                return i;
            }
            if r < first_min.0 {
                first_min = (r, i);
            }
        }
        // Unreachable in exact replay; fall back to the best relaxation.
        first_min.1
    }
}
