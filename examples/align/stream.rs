//! `align --method activation` on two features files, streamed a block of samples at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use ndarray::ArrayD;

use llfc::io::NpzReader;
use llfc::matching::activation::{activation_matching, ActivationMatchingOptions, ActivationStats};
use llfc::matching::structured::activation_matching_structured;
use llfc::{Error, Permutation, PermutationSpec};

use crate::cli::CliError;

/// Samples per block when the features files are streamed: memory is a few blocks of both
/// models whatever the number of samples.
pub(crate) const FEATURE_BLOCK_ROWS: usize = 2048;

/// One message of the features reader: a block of the same samples of A and B for the current
/// layer, or the end of layer `layer`.
pub(crate) enum FeatureBlock {
    Rows(Box<(ndarray::ArrayD<f64>, ndarray::ArrayD<f64>)>),
    /// The end of a layer, with the seconds the reader spent reading and decoding it.
    End(usize, f64),
}

/// The units of a `[N, d]`, `[N, T, d]` or `[N, c, h, w]` features array (see
/// `ActivationStats::update_dyn`).
pub(crate) fn units(shape: &[usize]) -> usize {
    match shape.len() {
        3 => shape[2],
        _ => shape.get(1).copied().unwrap_or(0),
    }
}

/// Activation matching from two features `.npz` files, streamed: a reader thread reads the
/// arrays of both files side by side, a block of samples at a time, while this thread adds the
/// blocks to each layer's statistics (the products, in parallel); as soon as a layer's
/// statistics are complete its LAP starts on a thread of its own, concurrently with the next
/// layers' products. Memory: the statistics and a few blocks, whatever the number of samples.
/// The blocks are fixed (`FEATURE_BLOCK_ROWS`) and each layer's LAP sees the same statistics
/// whatever the timing: results do not depend on the thread count. Unless `quiet`, where the
/// time goes is reported on stderr (reading per layer, statistics, each LAP).
pub(crate) fn streamed_activation_matching(
    spec: &PermutationSpec,
    path_a: &Path,
    path_b: &Path,
    options: &ActivationMatchingOptions,
    quiet: bool,
) -> Result<BTreeMap<String, Permutation>, CliError> {
    let wanted = spec.perm_names();
    let files = [NpzReader::open(path_a)?, NpzReader::open(path_b)?];
    for (npz, path) in files.iter().zip([path_a, path_b]) {
        let names = npz.names();
        if let Some(k) = wanted.iter().find(|k| !names.contains(k)) {
            return Err(CliError::Usage(format!(
                "features file `{}` has no array for permutation `{k}` (keys must be the spec's permutation names: {wanted:?})",
                path.display()
            )));
        }
    }
    let [mut npz_a, mut npz_b] = files;
    let start = Instant::now();
    let plain = spec.is_plain();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<FeatureBlock, Error>>(1);
        // Blocks the statistics are done with go back to the reader, which reads the next
        // blocks into their memory (no fresh pages per block).
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<(ArrayD<f64>, ArrayD<f64>)>();
        let wanted_ref = &wanted;
        scope.spawn(move || {
            let mut read = || -> Result<(), Error> {
                for (layer, name) in wanted_ref.iter().enumerate() {
                    let mut reading = 0.0;
                    let t = Instant::now();
                    let mut a = npz_a.blocks::<f64>(name, FEATURE_BLOCK_ROWS)?;
                    let mut b = npz_b.blocks::<f64>(name, FEATURE_BLOCK_ROWS)?;
                    if a.shape().first() != b.shape().first() {
                        return Err(Error::ShapeMismatch {
                            what: format!("samples of the features of `{name}` (A versus B)"),
                            expected: a.shape().to_vec(),
                            found: b.shape().to_vec(),
                        });
                    }
                    reading += t.elapsed().as_secs_f64();
                    loop {
                        let t = Instant::now();
                        let (spare_a, spare_b) = spent_rx
                            .try_recv()
                            .map_or((None, None), |(x, y)| (Some(x), Some(y)));
                        let blocks = (
                            a.next_block_reusing(spare_a)?,
                            b.next_block_reusing(spare_b)?,
                        );
                        reading += t.elapsed().as_secs_f64();
                        match blocks {
                            (Some(x), Some(y)) => {
                                if tx.send(Ok(FeatureBlock::Rows(Box::new((x, y))))).is_err() {
                                    return Ok(()); // the consumer stopped on an error
                                }
                            }
                            _ => break,
                        }
                    }
                    if tx.send(Ok(FeatureBlock::End(layer, reading))).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            };
            if let Err(e) = read() {
                let _ = tx.send(Err(e));
            }
        });
        let mut current: Option<ActivationStats> = None;
        let mut stats: BTreeMap<String, ActivationStats> = BTreeMap::new();
        let mut laps = Vec::new();
        let mut products = 0.0;
        for message in rx {
            match message? {
                FeatureBlock::Rows(pair) => {
                    let (x, y) = *pair;
                    let st = current.get_or_insert_with(|| {
                        ActivationStats::new(units(x.shape()), units(y.shape()))
                    });
                    let t = Instant::now();
                    st.update_dyn(x.view(), y.view())?;
                    products += t.elapsed().as_secs_f64();
                    let _ = spent_tx.send((x, y)); // the reader may have finished: then dropped
                }
                FeatureBlock::End(layer, reading) => {
                    if !quiet {
                        eprintln!(
                            "{}: read in {reading:.2} s (reader thread), statistics {products:.2} s, done at {:.2} s",
                            wanted[layer],
                            start.elapsed().as_secs_f64()
                        );
                    }
                    products = 0.0;
                    let name = wanted[layer].clone();
                    let st = current.take().ok_or_else(|| Error::EmptyInput {
                        what: format!("features of `{name}`"),
                    })?;
                    if plain {
                        // This layer's LAP runs while the next layers' products do.
                        let options = *options;
                        laps.push(scope.spawn(move || {
                            let t = Instant::now();
                            let perm = activation_matching(&BTreeMap::from([(name, st)]), &options);
                            if !quiet {
                                eprintln!(
                                    "LAP {layer}: {:.2} s, done at {:.2} s",
                                    t.elapsed().as_secs_f64(),
                                    start.elapsed().as_secs_f64()
                                );
                            }
                            perm
                        }));
                    } else {
                        stats.insert(name, st);
                    }
                }
            }
        }
        let mut perms = BTreeMap::new();
        for lap in laps {
            perms.extend(lap.join().expect("a LAP thread panicked")?);
        }
        if !plain {
            // Heads and embeddings: the exact structured steps on each layer's statistics.
            perms = activation_matching_structured(spec, &stats, options)?;
        }
        Ok(perms)
    })
}
