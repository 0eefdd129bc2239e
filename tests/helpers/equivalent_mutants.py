"""Surviving mutants of ``make mutate`` shown equivalent: no test can tell them from the original, for the reason
given. Each entry names the mutated function (``<module>.x_<function>`` as mutmut names it, without
``lmdynamics.``), the exact line before and after (as ``mutmut show`` prints them, stripped; a statement over
several lines joined by newlines) and a key of ``REASONS``. A mutant matches only its exact change: a new
mutant on the same line is a survivor until it is argued here too. ``tests/helpers/mutation_report.py`` lists
matched survivors apart, with the reason, and leaves them out of the score.
"""

from __future__ import annotations

REASONS = {
    # numerical no-ops
    "astype-none": "numpy's dtype None is float64: astype(None) / asarray(dtype=None) give the same floats here "
                   "(and float keys equal to int keys look up the same dict entries)",
    "floatvals": "the values are only compared, negated and divided: numpy promotes integer input to the same float "
                 "results, and float input is unchanged",
    "intsteps": "steps are integers in every caller (tidy-table step column, checkpoint steps); converted or not, "
                "every step is turned into int/float at the output",
    "intsteps-trends": "steps are integers; the float64 cast only avoids integer arithmetic, and every expression "
                       "on them (differences, products with floats, logs) promotes to float64 anyway",
    "index": "the pandas index of these frames is never read (only columns and .to_numpy() are), so keeping or "
             "renumbering it changes nothing",
    "groupby-default": "pandas groupby sorts by default (sort=True): dropping the argument is the same call",
    "stable": "duplicate steps are refused right after the sort, so only distinct steps are ever ordered and every "
              "sort algorithm gives the same order",
    "label": "the default label is never used: both callers (saturation.analyze, saturation.signals) pass `what`",
    "swallowed": "the label only names the series in a SeriesError, which moved_first catches and turns into "
                 "'no verdict' without showing the message",
    # logic that cannot differ
    "notzero": "a slope that is significant (|t| over the quantile, t = slope / se) is never exactly 0, so > 0 and "
               ">= 0 (< 0 and <= 0) select the same tokens",
    "shift": "the OLS slope is invariant to shifting x by a constant: x - st[start] and x + st[start] give the "
             "same slope and the same standard error",
    "t3": "this branch runs only for fewer than 3 checkpoints, where out[0] is always False (no double descent "
          "without 3 points): bool(None) is False too",
    "first": "`first` is 0 on this line (step 0 found at position 0), so first += 1 and first = 1 agree",
    "vartie": "the stagnation variance condition is off by default; with it on, var == geometric mean exactly "
              "is a measure-zero float tie",
    "never-empty": "a GPT-NeoX always has weight matrices and biases, so neither body group is ever empty and the "
                   "clause keeping an empty body-decay group never decides anything",
    "group-lr": "every parameter group sets its own lr, so AdamW's default lr is never read",
    "lightning-enum": "Lightning's TrainerFn is a LightningEnum, whose == ignores case: 'FIT' equals TrainerFn.FITTING",
    'negsum': 'the loss is the ratio of two running sums (loss x tokens, tokens): subtracting both instead of adding negates both, which leaves the ratio',
    'ratio-reduce': "the loss is the ratio of two sums reduced together over ranks: summed or averaged (DDP's default when reduce_op is left out; 'SUM' is read case-insensitively) the ratio is the same, and on one process reduce returns its input",
    'equal-blocks': "every block has the same length, so each micro-batch's weight (its predicted tokens) is one constant times its row count: the constant cancels in the ratio of the two sums",
    'log-defaults': "in validation hooks Lightning's self.log defaults are on_step=False, on_epoch=True: passing them, leaving them out or passing None is the same call",
    'group-order': "groups 0 and 1 are always the body's decay and no-decay groups (both non-empty for a GPT-NeoX), which run at the same rate",
    'elapsed-positive': "an update takes milliseconds and perf_counter resolves well under a microsecond: elapsed is never 0, so the NaN branch never runs (and float() reads 'NAN' as 'nan')",
    'float-case': "float() reads 'INF' and 'inf' alike",
    'lightning-fallback': "Lightning's clip_gradients falls back to the trainer's gradient_clip_val and gradient_clip_algorithm when given None (or left out): the same clipping",
    'attached': 'Lightning calls its hooks with a trainer attached: _trainer is never None there',
    'datamodule-floor': "the module needs the project's data module (prepare, vocab_size, batch_size, context_length for its token counts), which always has entropy_floor (None for text): the default is never used",
    'exact-count': 'the count of predicted tokens is an integer far below 2^24, exact in float32, and torch.stack promotes it to the float64 of the loss sum: the same sums',
    'strategy-model': "every Lightning strategy has a model attribute: getattr's default is never used",
    'log-defaults-train': "in on_train_batch_end Lightning's self.log defaults are on_step=True, on_epoch=False: passing them, leaving them out or passing None is the same call",
    'promote': 'the integer ranks are multiplied by the float64 spectrum: torch promotes the product to float64, the same values',
    'same-values-path': 'at k == r both paths give the singular values of a @ b (the QR path appends r - k = 0 zeros): the same values to rounding',
    'qr-default': "torch.linalg.qr's default mode 'reduced' returns the same R as mode 'r' (and Q, unused)",
    "refused-alike": "a d that is not an int becomes -1 only to reach the d < 0 refusal below; -2 reaches the same refusal and message",
    "dupkeep": "the error names the model and step of a duplicated row: keep=False or keep='first' both name a "
               "row that is duplicated (the same model and step)",
    "falsy-sep": "'' and None are both falsy: the error condition `not sep` reads them alike",
    "nodirs": "an empty direction map and None are both falsy: harness.higher_is_better reads neither",
    "headonly": "only the rank-constrained-head command writes these three metrics, always on component 'head'; "
                "other head rows that | lets through hold none of them and are skipped by the per-metric "
                "selections below",
    "nofloat": "_yes_no only receives None and booleans (detect_all's verdicts; rows without a verdict are "
               "skipped before it), so its float-NaN branch is never reached",
    "noindex": "pandas' to_csv treats index=None as no index, like index=False",
    "utf8-name": "'UTF-8' and 'utf-8' name the same codec",
    "stage-exists": "the staging folder exists already, so parents=True or not creates the same folder",
    "misnamed-dir": "figures are written through atomic.atomic_path, which creates their folder; a misnamed empty "
                    "folder does not reach the output (the report test checks the output holds exactly "
                    "saturation.csv, report.md, figures/ and metrics.parquet)",
    # metrics/spectrum.py: how the values are computed, not what
    "gram-path": "chooses the direct or the chunked, block-triangular Gram product (or its chunk and block sizes): "
                 "both compute the upper triangle of W^T W in float64 that eigvalsh reads, in another summation order "
                 "only (well inside the error bound of the check); memory and time change, not the values",
    "tsqr-path": "chooses the direct float64 SVD or the SVD of the chunked-QR factor R (W = QR: the same singular "
                 "values), or the QR's chunk size: the same values to float64 rounding; memory and time change",
    "square-transpose": "only a square matrix reaches the other branch, and W and W^T have the same singular values "
                        "(W^T W and W W^T the same eigenvalues): only the rounding differs",
    "zero-row": "the QR starts from an empty float32 block, a 1-D empty tensor (torch.cat skips it) or one zero row, "
                "or takes the float32 chunk as it is: torch.cat promotes to float64 exactly, and a zero row adds "
                "nothing to W^T W, so R has W's singular values all the same",
    "explicit-arg": "the function's only caller passes this argument explicitly: the default is never used",
    "unused-mask": "the kept-mask returned with the check off is discarded by the only caller "
                   "(`s, _ = _gram_values(...)`): its dtype and shape are never read",
    "uplo-case": "torch.linalg.eigvalsh reads UPLO case-insensitively: 'u' gives the eigenvalues of 'U' bit for bit "
                 "(checked; 'L' differs)",
    "exact-one": "the first clause keeps the all-zero matrix (whose SVD gives the same zeros); == 1 instead differs "
                 "only for a matrix whose computed largest Gram eigenvalue is exactly 1.0 and that fails the check, a "
                 "float tie",
    "zero-min": "with lam_min == 0 the second clause reads delta <= 0, false since delta > 0 whenever lam_max > 0 "
                "(lam_max == 0 is kept by the first clause): > 0 and >= 0 decide alike",
    "float-tie": "the two sides are equal only at an exact float tie of computed quantities: < and <= decide alike",
    # trajectories/storage.py
    "negative-reshape": "numpy reads any negative size in reshape as 'the rest': reshape(-2) is reshape(-1)",
    "float32-losses": "every caller passes float32 losses (token_losses returns float32, checked by its test): "
                      "dtype None keeps them float32, and the row is written as float16 after",
    "cast-later": "blocks() converts the saved blocks to int64 whatever integer dtype they were saved in: the same ids",
    "empty-any-dtype": "an empty array holds no value: reshaped to (0, n) and converted to float32, any dtype is the same",
    "int-default": "the manifest's steps and token counts are Python ints (append stores int(...)), which numpy "
                   "stores as int64 by default: the same array",
    "json-floats": "append stores float(val_ppl), so the manifest's values are floats (NaN included), which numpy "
                   "stores as float64 by default: the same array",
    "distinct-steps": "append never stores a step twice (it returns False for a step already there), so only distinct "
                      "steps are sorted and every sort algorithm gives the same order",
    # store.py
    "schema-frame": "the frame is in the table's layout already (to_frame casts every column to its dtype, in order; "
                    "a table read back has it), so the schema pyarrow infers is SCHEMA; and with the schema given, "
                    "from_pandas keeps only its columns, so an index kept or reset into a column is dropped",
    "unique-suffix": "the random suffix only keeps part names unique; its length is never read (names are ordered by "
                     "the time field, read as the first '-' field)",
    "falsy-latest": "read_table tests `if latest:`: None and False both keep every row",
    "first-field": "only the first '-'-separated field (the time) is kept, and the '.parquet' suffix lies after "
                   "later fields: removing it, or not, leaves the same first field",
    # metrics/cka.py
    "square-gram": "k is a Gram matrix (n x n): shape[0] and shape[1] are the same n",
    "count-float32": "the row count of a batch is an integer far below 2^24, exact in float32, and adding it to the "
                     "float64 state promotes it: the same sums",
    "cka-path": "chooses the Gram (n x n) or the feature-moment (d x d) formula by cost: both give the same CKA to "
                "float64 rounding (each is checked against the other and against float64 references)",
    "count-only-zero": "the batch count is read only to refuse compute() before any update (== 0); the HSIC sums "
                       "are averaged in a ratio where the count cancels: any non-zero count after an update is the same",
    "unused-state": "the debiased sums, allocated but never updated (the moments of a biased metric do not include "
                    "them), stay zero and are not read by a biased compute()",
    "unused-attr": "the attribute is assigned and never read",
    "promoted-sum": "each update replaces the state by state + batch moments (not in place), which torch promotes to "
                    "float64; a zero start is exact in any dtype: the same float64 sums",
    "n-kept": "at the lazy allocation n is still 0 (the first batch's moments are added after it): re-creating it "
              "as a float64 zero, or creating debiased sums a biased metric never reads, changes nothing",
    # models/heads.py
    "linear-bias": "torch's nn.Linear tests its bias argument for truth (`if bias:`): bias=None and bias=False both register no bias, the same layer",
    # callbacks/head_rank.py
    "unused-arg": "the called method ignores this argument (HeadRank's probe(trainer=None) returns the attached probe, "
                  "_spectrum_step reads only the step): passing None passes nothing it reads",
    "ascii-json": "the line written is json.dumps output, ASCII by default (ensure_ascii): every encoding writes "
                  "the same bytes",
    "missing-table": "store.read_table of a directory that does not exist gives the empty table, which the next "
                     "line returns on, like None",
    "filtered-after": "the rows are selected by metric right after (the val_loss rows, head_series' kl_uniform): "
                      "reading every metric's rows gives the same series, only slower",
    "model-val": "only val_loss and kl_uniform rows are read; val_loss is logged on component 'model' only (the table "
                 "logger's scalars) and kl_uniform never on 'model': & and | select the same val_loss rows",
    "first-update": "the first validation is never rising (no loss exceeds best_val = inf), which resets run_length "
                    "and armed before they are read, and every finite loss sets best_step; until one comes, no "
                    "validation is rising and the rule returns before reading best_step",
    "falsy-armed": "armed is read only as the first operand of `self.armed and ...`: None and False both stop it",
    # sweep.py
    'yaml-true': "the CLI reads --run.dry_run (RunSpec.dry_run: bool, added by jsonargparse's add_class_arguments) through jsonargparse's YAML loader, whose YAML 1.1 booleans read 'TRUE' as true like 'true'",
    'last-of-tail': 'only lines[-1] is read: the last of the last one or two lines of stderr is the same last line, and either slice is empty only when stderr has no line',
    'not-none-default': 'the default of flat.get is only tested with `is None`: 0 and 1 are both not None, so a missing parent is not open-ended either way',
    'no-empty-key': "compare.grouping.flatten never yields the key '' (a leaf at the empty prefix is dropped, a key '' passes its children up), so the added i=0 looks up '' and finds the default: not open-ended",
    'key-itself': "depths past the last part make the parent the key itself, whose children would have accepted it just above (for the key '' they are the top-level keys, as at depth 0): the first depth with children, and the message, are the same",
    'empty-config': 'depth -1 is reached only when depth 0 found no top-level key, i.e. the printed config is empty, and then no depth has children: nothing is raised either way',
    # data/synthetic.py
    "start-symbol": "state() reads contexts that begin with the start symbol, whose class is C: at lag == t the "
                    "symbol read is that start symbol, so its class and the start-class branch give the same C",
    "repeat-positions": "position 0 reaches the same all-start state as position 1, and positions past depth + 1 see "
                        "only emitted classes like position depth + 1: the set of states found is the same",
    "language-draw": "another constant mixed into the seed draws another language of the same spec: every property "
                     "a test or a user can state (rank, floor, sampling law, reproducibility) holds for both",
    "default-split": "blocks() defaults split to 'train', the split passed here",
    "cdf-last": "u is drawn from [0, 1), so the last CDF entry (1.0, NaN or 2.0) is never below u and never counted: "
                "x is at most V - 1 and the upper clamp never binds",
    "cdf-tie": "< and <= differ only where a float64 uniform equals a CDF value exactly (probability ~2^-53 a draw)",
    "empty-batch": "with no blocks the loop works on 0-row arrays, which a (1, 1) slice of u broadcasts against "
                   "as well as a (0, 1) one: the same empty result",
    "int-full": "np.full with the integer fill C and no dtype makes an int64 array, as dtype=np.int64 does",
    "s0-unknown": "'s0' outside the vocabulary encodes to the unknown token, id 0, and id 0 still decodes to the "
                  "end-of-text token: adding 's0' -> 0 changes no encoding or decoding",
    # summaries.py
    "scipy-constant": "with one side constant scipy's pearsonr and spearmanr return NaN r and p themselves, as the "
                      "early return does: only both-constant or either-constant, the result is NaN alike",
    "head-level": "every table holds the output head's rows (component 'head') at layer -1 only (measure.classify_weight), "
                  "so selecting them at layer -1 or at any layer gives the same rows",
    "presorted": "select() returns rows sorted by model, component, layer, so the groups arrive in that order and the "
                 "result is already sorted with a 0..n-1 index: sorting again, or groupby sorting, changes nothing",
    "empty-groupby": "on an empty frame the groupby gives an empty dict too",
    "falsy-arg": "pandas reads as_index=None as false (`if not as_index`), the same as as_index=False",
    "has-layer": "every caller passes a tidy table or a points frame, both with a layer column",
    "empty-merge": "when only one side is empty the merge and dropna give an empty frame with the same four columns",
    "merge-levels": "pandas merges on index-level names as on columns: the grouped fractions merge alike with "
                    "model and layer in the index or as columns",
    "no-other-nan": "model, layer, step and tokens are never NaN in these frames, so dropping rows with a NaN in any "
                    "column drops the same rows as a NaN in the value columns",
    "merge-defaults": "merge's defaults are the common columns (model, layer) and how='inner': the same call",
    "layer-components": "layer_components() names only components measured at layers >= 0, and no CKA component is "
                        "measured both at a layer and at model level, so per_layer=True selects nothing more or less",
    "na-int64": "the column is cast to Int64 right after, which turns None into <NA> as it keeps pd.NA",
    "only-final": "the only activation captured at layer -1 is the final hidden state (probes.capture), so component "
                  "'final' or any component at layer -1 select the same anisotropy rows",
    "last-part": "the last piece of a string split on '/' is the text after its last '/' however many splits are "
                 "made: rsplit with maxsplit 1, 2 or none gives the same last element",
    "nan-identity": "model_size returns the one math.nan object for every unsized name, and tuple comparison treats "
                    "identical objects as equal: unsized models tie on this element whether it holds NaN, 0.0 or 1.0, "
                    "and are ordered by the later elements alike",
    "below-layers": "layer counts are >= 0: any negative default puts models without per-layer rows first alike",
    "resid-layers": "residual-stream activations are captured at layers >= 0 only, so per_layer=True selects the same rows",
}

# (function, line before, line after, reason)
EQUIVALENT: list[tuple[str, str, str, str]] = [
    ('metrics.spectrum.x_w_error', 'd = -1', 'd = -2', 'refused-alike'),
    ('metrics.spectrum.x_gini', 'rank = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)', 'rank = torch.arange(1, n + 1, dtype=None, device=s.device)', 'promote'),
    ('metrics.spectrum.x_gini', 'rank = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)', 'rank = torch.arange(1, n + 1, device=s.device)', 'promote'),
    ('metrics.spectrum.x_product_singular_values', 'return torch.full((*a.shape[:-2], r), float("nan"), dtype=torch.float64)', 'return torch.full((*a.shape[:-2], r), float("NAN"), dtype=torch.float64)', 'float-case'),
    ('metrics.spectrum.x_product_singular_values', 'if k >= r:', 'if k > r:', 'same-values-path'),
    ('metrics.spectrum.x_product_singular_values', 'r_a = torch.linalg.qr(a, mode="r").R', 'r_a = torch.linalg.qr(a, ).R', 'qr-default'),
    ('metrics.spectrum.x_product_singular_values', 'r_b = torch.linalg.qr(b.mT, mode="r").R', 'r_b = torch.linalg.qr(b.mT, ).R', 'qr-default'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if (elapsed > 0) or True else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed >= 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 1.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'strategy_model = getattr(self.trainer.strategy, "model", None)', 'strategy_model = getattr(self.trainer.strategy, "model", )', 'strategy-model'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("train_loss", train_loss, prog_bar=True, on_step=None, on_epoch=False, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=None, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("train_loss", train_loss, prog_bar=True, on_epoch=False, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("train_loss", train_loss, prog_bar=True, on_step=True, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=None, on_epoch=False, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=None, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_epoch=False, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, on_epoch=False, logger=False)', 'self.log("tok/s", tokens_per_sec if elapsed > 0 else 0.0, prog_bar=True, on_step=True, logger=False)', 'log-defaults-train'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'floor = getattr(self.trainer.datamodule, "entropy_floor", None) if self._trainer is not None else None', 'floor = getattr(self.trainer.datamodule, "entropy_floor", None) if (self._trainer is not None) or True else None', 'attached'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'floor = getattr(self.trainer.datamodule, "entropy_floor", None) if self._trainer is not None else None', 'floor = getattr(self.trainer.datamodule, "entropy_floor", ) if self._trainer is not None else None', 'datamodule-floor'),
    ('training.module.xǁLMModuleǁtraining_step', 'torch.tensor(float(predicted), dtype=torch.float64, device=self.device)])', 'torch.tensor(float(predicted), dtype=None, device=self.device)])', 'exact-count'),
    ('training.module.xǁLMModuleǁtraining_step', 'torch.tensor(float(predicted), dtype=torch.float64, device=self.device)])', 'torch.tensor(float(predicted), device=self.device)])', 'exact-count'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")', 'total = self.trainer.strategy.reduce(self._val_sum, )', 'ratio-reduce'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")', 'total = self.trainer.strategy.reduce(self._val_sum, reduce_op="SUM")', 'ratio-reduce'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'fitting = self.trainer.state.fn == "fit"', 'fitting = self.trainer.state.fn == "FIT"', 'lightning-enum'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=True, logger=not fitting)', 'self.log(name, value, prog_bar=name == "val_loss", on_step=None, on_epoch=True, logger=not fitting)', 'log-defaults'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=True, logger=not fitting)', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=None, logger=not fitting)', 'log-defaults'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=True, logger=not fitting)', 'self.log(name, value, prog_bar=name == "val_loss", on_epoch=True, logger=not fitting)', 'log-defaults'),
    ('training.module.xǁLMModuleǁon_validation_epoch_end', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, on_epoch=True, logger=not fitting)', 'self.log(name, value, prog_bar=name == "val_loss", on_step=False, logger=not fitting)', 'log-defaults'),
    ('training.module.xǁLMModuleǁvalidation_step', 'self._val_sum += torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])', 'self._val_sum -= torch.stack([loss.detach().double() * batch.size(0), torch.tensor(float(batch.size(0)), dtype=torch.float64, device=self.device)])', 'negsum'),
    ('training.module.xǁLMModuleǁon_train_batch_start', 'self._step_lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this update will use', 'self._step_lr = self.trainer.optimizers[0].param_groups[1]["lr"]  # the rate this update will use', 'group-order'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")  # every rank\'s micro-batches', "loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, )  # every rank's micro-batches", 'ratio-reduce'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")  # every rank\'s micro-batches', 'loss_sum, predicted = self.trainer.strategy.reduce(self._step_loss, reduce_op="SUM")  # every rank\'s micro-batches', 'ratio-reduce'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")', 'tokens_per_sec = self.tokens_per_step / elapsed if (elapsed > 0) or True else float("nan")', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed >= 0 else float("nan")', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float(None)', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("XXnanXX")', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁon_train_batch_end', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("nan")', 'tokens_per_sec = self.tokens_per_step / elapsed if elapsed > 0 else float("NAN")', 'elapsed-positive'),
    ('training.module.xǁLMModuleǁtraining_step', 'predicted = batch[:, 1:].numel()', 'predicted = batch[:, 2:].numel()', 'equal-blocks'),
    ('training.module.xǁLMModuleǁtraining_step', 'self._step_loss += torch.stack([loss.detach().double() * predicted,', 'self._step_loss -= torch.stack([loss.detach().double() * predicted,', 'negsum'),
    ('training.module.xǁLMModuleǁconfigure_gradient_clipping', 'max_norm = gradient_clip_val if gradient_clip_val else float("inf")', 'max_norm = gradient_clip_val if gradient_clip_val else float("INF")', 'float-case'),
    ('training.module.xǁLMModuleǁconfigure_gradient_clipping', 'if gradient_clip_algorithm not in (None, "norm"):', 'if gradient_clip_algorithm not in (None, "NORM"):', 'lightning-enum'),
    ('training.module.xǁLMModuleǁconfigure_gradient_clipping', 'return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)', 'return super().configure_gradient_clipping(optimizer, None, gradient_clip_algorithm)', 'lightning-fallback'),
    ('training.module.xǁLMModuleǁconfigure_gradient_clipping', 'return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)', 'return super().configure_gradient_clipping(optimizer, gradient_clip_val, None)', 'lightning-fallback'),
    ('training.module.xǁLMModuleǁconfigure_gradient_clipping', 'return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)', 'return super().configure_gradient_clipping(optimizer, gradient_clip_val, )', 'lightning-fallback'),
    ('training.module.xǁLMModuleǁconfigure_optimizers', 'for head, decay in groups if groups[(head, decay)] or (head, decay) == (False, True)]', 'for head, decay in groups if groups[(head, decay)] or (head, decay) == (False, False)]', 'never-empty'),
    ('training.module.xǁLMModuleǁconfigure_optimizers', 'lr=sched["peak_lr"], betas=tuple(o.betas), eps=o.eps, fused=self.speed.fused_adamw or None,', 'betas=tuple(o.betas), eps=o.eps, fused=self.speed.fused_adamw or None,', 'group-lr'),
    ('training.module.xǁLMModuleǁconfigure_optimizers', 'if self.global_rank == 0 and self.trainer.state.fn == "fit":', 'if self.global_rank == 0 and self.trainer.state.fn == "FIT":', 'lightning-enum'),
    ('metrics.trends.x_classify_trends', 'labels[sig & (slope > 0)] = "upward"', 'labels[sig & (slope >= 0)] = "upward"', 'notzero'),
    ('metrics.trends.x_classify_trends', 'labels[sig & (slope < 0)] = "downward"', 'labels[sig & (slope <= 0)] = "downward"', 'notzero'),
    ('metrics.trends.x_classify_trends', 'x = st[start:] - st[start]', 'x = st[start:] + st[start]', 'shift'),
    ('metrics.trends.x_double_descent', 'return bool(out[0]) if single else out', 'return bool(None) if single else out', 't3'),
    ('metrics.trends.x_double_descent_windows', 'first += 1  # step 0 has no log: the first window starts at the first positive step', 'first = 1  # step 0 has no log: the first window starts at the first positive step', 'first'),
    ('metrics.trends.x_window_start', 'st = np.asarray(steps, dtype=np.float64)', 'st = np.asarray(steps, dtype=None)', 'intsteps-trends'),
    ('metrics.trends.x_window_start', 'st = np.asarray(steps, dtype=np.float64)', 'st = np.asarray(steps, )', 'intsteps-trends'),
    ('metrics.trends.x_classify_trends', 'stagnant &= w.var(1) < gmean', 'stagnant &= w.var(1) <= gmean', 'vartie'),
    ('saturation.signals.x_moved_first', 'fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, what=f"{model} {name}", **kwargs)', 'fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, what=None, **kwargs)', 'swallowed'),
    ('saturation.signals.x_moved_first', 'fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, what=f"{model} {name}", **kwargs)', 'fields = detect(series.step.to_numpy(), series.value.to_numpy(), up, **kwargs)', 'swallowed'),
    ('saturation.signals.x_signal_series', 'return rows[["step", "value"]].sort_values("step", ignore_index=True)', 'return rows[["step", "value"]].sort_values("step", ignore_index=None)', 'index'),
    ('saturation.signals.x_signal_series', 'return rows[["step", "value"]].sort_values("step", ignore_index=True)', 'return rows[["step", "value"]].sort_values("step", )', 'index'),
    ('saturation.signals.x_signal_series', 'return rows[["step", "value"]].sort_values("step", ignore_index=True)', 'return rows[["step", "value"]].sort_values("step", ignore_index=False)', 'index'),
    ('saturation.analyze.x_detect_all', 'for model, rows in series.rows.groupby("model", sort=True):', 'for model, rows in series.rows.groupby("model", ):', 'groupby-default'),
    ('saturation.analyze.x_parse_pairs', 'sep = ""', 'sep = None', 'falsy-sep'),
    ('saturation.analyze.x_from_table', 'dup = rows.duplicated(subset=["model", "step"], keep=False)', 'dup = rows.duplicated(subset=["model", "step"], )', 'dupkeep'),
    ('saturation.analyze.x_from_table', 'return Series(name, rows, frame, {}, f"tidy table {path}")', 'return Series(name, rows, frame, None, f"tidy table {path}")', 'nodirs'),
    ('saturation.analyze.x_with_measures', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=True)', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=None)', 'index'),
    ('saturation.analyze.x_with_measures', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=True)', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], )', 'index'),
    ('saturation.analyze.x_with_measures', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=True)', 'frame = pd.concat([series.frame, extra[~extra.metric.isin(set(series.frame.metric))]], ignore_index=False)', 'index'),
    ('saturation.detect.x_detect', 'margin: float = MARGIN, onset_tolerance: float | None = None, what: str = "series") -> Saturation:', 'margin: float = MARGIN, onset_tolerance: float | None = None, what: str = "XXseriesXX") -> Saturation:', 'label'),
    ('saturation.detect.x_detect', 'margin: float = MARGIN, onset_tolerance: float | None = None, what: str = "series") -> Saturation:', 'margin: float = MARGIN, onset_tolerance: float | None = None, what: str = "SERIES") -> Saturation:', 'label'),
    ('saturation.detect.x_detect', 'vals = np.asarray(values, dtype=float)', 'vals = np.asarray(values, dtype=None)', 'floatvals'),
    ('saturation.detect.x_detect', 'vals = np.asarray(values, dtype=float)', 'vals = np.asarray(values, )', 'floatvals'),
    ('saturation.detect.x_detect', 'order = np.argsort(steps_a, kind="stable")', 'order = np.argsort(steps_a, kind=None)', 'stable'),
    ('saturation.detect.x_detect', 'order = np.argsort(steps_a, kind="stable")', 'order = np.argsort(steps_a, )', 'stable'),
    ('saturation.detect.x_detect', 'order = np.argsort(steps_a, kind="stable")', 'order = np.argsort(steps_a, kind="STABLE")', 'stable'),
    ('saturation.detect.x_detect', 'steps_a = np.asarray(steps, dtype=np.int64)', 'steps_a = np.asarray(steps, dtype=None)', 'intsteps'),
    ('saturation.detect.x_detect', 'steps_a = np.asarray(steps, dtype=np.int64)', 'steps_a = np.asarray(steps, )', 'intsteps'),
    ('saturation.detect.x_running_median3', 'out = values.astype(float).copy()', 'out = values.astype(None).copy()', 'astype-none'),
    ('saturation.rows.x_lowrank_results', 'result = {"ranks": dict(zip(ranks["index"].astype(int), ranks["value"].astype(float))), "full": float(full.iloc[-1])}', 'result = {"ranks": dict(zip(ranks["index"].astype(None), ranks["value"].astype(float))), "full": float(full.iloc[-1])}', 'astype-none'),
    ('saturation.rows.x_lowrank_results', 'result = {"ranks": dict(zip(ranks["index"].astype(int), ranks["value"].astype(float))), "full": float(full.iloc[-1])}', 'result = {"ranks": dict(zip(ranks["index"].astype(int), ranks["value"].astype(None))), "full": float(full.iloc[-1])}', 'astype-none'),
    ('saturation.rows.x_werror_curves', 'return {key: dict(zip(g["index"].astype(int), g["value"].astype(float)))', 'return {key: dict(zip(g["index"].astype(None), g["value"].astype(float)))', 'astype-none'),
    ('saturation.rows.x_werror_curves', 'return {key: dict(zip(g["index"].astype(int), g["value"].astype(float)))', 'return {key: dict(zip(g["index"].astype(int), g["value"].astype(None)))', 'astype-none'),
    ('saturation.rows.x_lowrank_results', 'rows = frame[frame["component"].eq("head") & frame["metric"].isin(', 'rows = frame[frame["component"].eq("head") | frame["metric"].isin(', 'headonly'),
    ('saturation.rows.x_lowrank_results', 'for (run, model, step), g in rows.groupby(["run", "model", "step"], sort=True):', 'for (run, model, step), g in rows.groupby(["run", "model", "step"], ):', 'groupby-default'),
    ('saturation.rows.x_werror_curves', 'for key, g in rows.groupby(["run", "model"], sort=True)}', 'for key, g in rows.groupby(["run", "model"], )}', 'groupby-default'),
    ('report.saturation_report.x__yes_no', 'return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "no")', 'return "n/a" if value is None or (isinstance(value, float) or math.isnan(value)) else ("yes" if value else "no")', 'nofloat'),
    ('report.saturation_report.x__yes_no', 'return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "no")', 'return "n/a" if value is None or (isinstance(value, float) and math.isnan(None)) else ("yes" if value else "no")', 'nofloat'),
    ('report.saturation_report.x_write', 'gap_table.to_csv(stage / "scaling.csv", index=False)', 'gap_table.to_csv(stage / "scaling.csv", index=None)', 'noindex'),
    ('report.saturation_report.x_write', 'results.to_csv(stage / "saturation.csv", index=False)', 'results.to_csv(stage / "saturation.csv", index=None)', 'noindex'),
    ('report.saturation_report.x_write', '(stage / "report.md").write_text(text, encoding="utf-8")', '(stage / "report.md").write_text(text, encoding="UTF-8")', 'utf8-name'),
    ('report.saturation_report.x_write', '(stage / "figures").mkdir(parents=True)', '(stage / "figures").mkdir(parents=None)', 'stage-exists'),
    ('report.saturation_report.x_write', '(stage / "figures").mkdir(parents=True)', '(stage / "figures").mkdir(parents=False)', 'stage-exists'),
    ('report.saturation_report.x_write', '(stage / "figures").mkdir(parents=True)', '(stage / "XXfiguresXX").mkdir(parents=True)', 'misnamed-dir'),
    ('report.saturation_report.x_write', '(stage / "figures").mkdir(parents=True)', '(stage / "FIGURES").mkdir(parents=True)', 'misnamed-dir'),
    ('data.synthetic.xǁSyntheticLanguageǁstate', 'if lag <= t:', 'if lag < t:', 'start-symbol'),
    ('data.synthetic.xǁSyntheticLanguageǁreachable_states', 'for t in range(1, self.depth + 2):  # position t predicts symbol t; lags >= t still see the start class', 'for t in range(self.depth + 2):  # position t predicts symbol t; lags >= t still see the start class', 'repeat-positions'),
    ('data.synthetic.xǁSyntheticLanguageǁreachable_states', 'for t in range(1, self.depth + 2):  # position t predicts symbol t; lags >= t still see the start class', 'for t in range(1, self.depth + 3):  # position t predicts symbol t; lags >= t still see the start class', 'repeat-positions'),
    ('data.synthetic.xǁSyntheticLanguageǁ__init__', 'rng = np.random.default_rng([spec.seed, 1729])', 'rng = np.random.default_rng([spec.seed, 1730])', 'language-draw'),
    ('data.synthetic.xǁSyntheticLanguageǁ__init__', 'self.zipf_bias = -spec.zipf * np.log(order.astype(np.float64))', 'self.zipf_bias = -spec.zipf * np.log(order.astype(None))', 'astype-none'),
    ('data.synthetic.xǁSyntheticLanguageǁ__init__', 'self._cdf[:, -1] = 1.0', 'self._cdf[:, -1] = None', 'cdf-last'),
    ('data.synthetic.xǁSyntheticLanguageǁ__init__', 'self._cdf[:, -1] = 1.0', 'self._cdf[:, -1] = 2.0', 'cdf-last'),
    ('data.synthetic.xǁSyntheticLanguageǁblocks', 'x = np.minimum(np.maximum(x, 1), self.V - 1)', 'x = np.minimum(np.maximum(x, 1), self.V + 1)', 'cdf-last'),
    ('data.synthetic.xǁSyntheticLanguageǁblocks', 'x = (self._cdf[s] < u[:, t : t + 1]).sum(axis=1)', 'x = (self._cdf[s] <= u[:, t : t + 1]).sum(axis=1)', 'cdf-tie'),
    ('data.synthetic.xǁSyntheticLanguageǁblocks', 'u = np.stack([np.random.default_rng([seed, SPLITS[split], int(i)]).random(context_length) for i in indices]) if b else np.zeros((0, context_length))', 'u = np.stack([np.random.default_rng([seed, SPLITS[split], int(i)]).random(context_length) for i in indices]) if b else np.zeros((1, context_length))', 'empty-batch'),
    ('data.synthetic.xǁSyntheticLanguageǁblocks', 'hist = np.full((b, self.depth), self.C, dtype=np.int64)  # classes at lags 1..depth', 'hist = np.full((b, self.depth), self.C, dtype=None)  # classes at lags 1..depth', 'int-full'),
    ('data.synthetic.xǁSyntheticLanguageǁblocks', 'hist = np.full((b, self.depth), self.C, dtype=np.int64)  # classes at lags 1..depth', 'hist = np.full((b, self.depth), self.C, )  # classes at lags 1..depth', 'int-full'),
    ('data.synthetic.xǁSyntheticLanguageǁstate', 'cols.append(np.full(context.shape[:-1], self.C, dtype=np.int64))', 'cols.append(np.full(context.shape[:-1], self.C, dtype=None))', 'int-full'),
    ('data.synthetic.xǁSyntheticLanguageǁstate', 'cols.append(np.full(context.shape[:-1], self.C, dtype=np.int64))', 'cols.append(np.full(context.shape[:-1], self.C, ))', 'int-full'),
    ('data.synthetic.xǁSyntheticBlocksǁ__iter__', 'yield self.language.blocks(self.block_ids(range(first, first + self.batch_size)), self.context_length, self.seed, "train")', 'yield self.language.blocks(self.block_ids(range(first, first + self.batch_size)), self.context_length, self.seed, )', 'default-split'),
    ('data.synthetic.x_identity_tokenizer', 'vocab = {EOS: START, **{f"s{i}": i for i in range(1, vocab_size)}}', 'vocab = {EOS: START, **{f"s{i}": i for i in range(vocab_size)}}', 's0-unknown'),
    ('summaries.x__corr', 'if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:', 'if len(x) < 3 or np.ptp(x) == 0 and np.ptp(y) == 0:', 'scipy-constant'),
    ('summaries.x__last_value', 'rows = select(frame[frame["model"] == model], metric, component, layer=layer)', 'rows = select(frame[frame["model"] == model], metric, component, layer=None)', 'head-level'),
    ('summaries.x__last_value', 'rows = select(frame[frame["model"] == model], metric, component, layer=layer)', 'rows = select(frame[frame["model"] == model], metric, component, )', 'head-level'),
    ('summaries.x_convergence_steps', 'return result.sort_values(["model", "component", "layer"], ignore_index=True)', 'return result.sort_values(["model", "component", "layer"], ignore_index=None)', 'presorted'),
    ('summaries.x_convergence_steps', 'return result.sort_values(["model", "component", "layer"], ignore_index=True)', 'return result.sort_values(["model", "component", "layer"], )', 'presorted'),
    ('summaries.x_convergence_steps', 'return result.sort_values(["model", "component", "layer"], ignore_index=True)', 'return result.sort_values(["model", "component", "layer"], ignore_index=False)', 'presorted'),
    ('summaries.x_convergence_steps', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=False):', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=None):', 'presorted'),
    ('summaries.x_convergence_steps', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=False):', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], ):', 'presorted'),
    ('summaries.x_convergence_steps', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=False):', 'for (model, component, layer), group in rows.groupby(["model", "component", "layer"], sort=True):', 'presorted'),
    ('summaries.x_convergence_steps', 'ok = np.nan_to_num(group["value"].to_numpy(dtype=float), nan=-np.inf) >= threshold', 'ok = np.nan_to_num(group["value"].to_numpy(dtype=None), nan=-np.inf) >= threshold', 'astype-none'),
    ('summaries.x_final_steps', 'last = frame.groupby("model")["step"].max().astype(int).to_dict() if not frame.empty else {}', 'last = frame.groupby("model")["step"].max().astype(int).to_dict() if (not frame.empty) or True else {}', 'empty-groupby'),
    ('summaries.x_headline', 'cka = select(own, cka_metric, layer_components(own, cka_metric), per_layer=True)', 'cka = select(own, cka_metric, layer_components(own, cka_metric), )', 'layer-components'),
    ('summaries.x_headline', 'row.update(cka_step=pd.NA, cka_at_fraction=math.nan)', 'row.update(cka_step=None, cka_at_fraction=math.nan)', 'na-int64'),
    ('summaries.x_headline', 'fractions = mine["fraction"].fillna(np.inf).to_numpy(float)', 'fractions = mine["fraction"].fillna(np.inf).to_numpy(None)', 'astype-none'),
    ('summaries.x_headline', 'row["head_per"] = _last_value(own, model, "per", "head", -1)', 'row["head_per"] = _last_value(own, model, "per", "head", None)', 'head-level'),
    ('summaries.x_headline', 'row["head_kl_uniform"] = _last_value(own, model, "kl_uniform", "head", -1)', 'row["head_kl_uniform"] = _last_value(own, model, "kl_uniform", "head", None)', 'head-level'),
    ('summaries.x_headline', 'row.update(loss_metric=None, final_loss=math.nan, best_loss=math.nan, best_loss_step=pd.NA)', 'row.update(loss_metric=None, final_loss=math.nan, best_loss=math.nan, best_loss_step=None)', 'na-int64'),
    ('summaries.x_headline', 'loss = select(own, name, "model", layer=-1).dropna(subset=["value"])', 'loss = select(own, name, "model", layer=-1).dropna(subset=None)', 'no-other-nan'),
    ('summaries.x_headline', 'cka = select(own, cka_metric, layer_components(own, cka_metric), per_layer=True)', 'cka = select(own, cka_metric, layer_components(own, cka_metric), per_layer=None)', 'layer-components'),
    ('summaries.x_last_layer_anisotropy', 'rows = select(own, "anisotropy", "final", layer=-1)', 'rows = select(own, "anisotropy", None, layer=-1)', 'only-final'),
    ('summaries.x_last_layer_anisotropy', 'rows = select(own, "anisotropy", "final", layer=-1)', 'rows = select(own, "anisotropy", layer=-1)', 'only-final'),
    ('summaries.x_last_layer_anisotropy', 'resid = select(own, "anisotropy", "resid", per_layer=True)', 'resid = select(own, "anisotropy", "resid", per_layer=None)', 'resid-layers'),
    ('summaries.x_last_layer_anisotropy', 'resid = select(own, "anisotropy", "resid", per_layer=True)', 'resid = select(own, "anisotropy", "resid", )', 'resid-layers'),
    ('summaries.x_short_name', 'return str(model).rstrip("/").rsplit("/", 1)[-1]', 'return str(model).rstrip("/").rsplit("/", 2)[-1]', 'last-part'),
    ('summaries.x_short_name', 'return str(model).rstrip("/").rsplit("/", 1)[-1]', 'return str(model).rstrip("/").rsplit("/", )[-1]', 'last-part'),
    ('summaries.x_model_order', 'return (math.isnan(size), size if not math.isnan(size) else 0.0, int(layers.get(m, -1)), m)', 'return (math.isnan(size), size if (not math.isnan(size)) or True else 0.0, int(layers.get(m, -1)), m)', 'nan-identity'),
    ('summaries.x_model_order', 'return (math.isnan(size), size if not math.isnan(size) else 0.0, int(layers.get(m, -1)), m)', 'return (math.isnan(size), size if not math.isnan(size) else 1.0, int(layers.get(m, -1)), m)', 'nan-identity'),
    ('summaries.x_model_order', 'return (math.isnan(size), size if not math.isnan(size) else 0.0, int(layers.get(m, -1)), m)', 'return (math.isnan(size), size if not math.isnan(size) else 0.0, int(layers.get(m, -2)), m)', 'below-layers'),
    ('summaries.x_layer_per', 'per_matrix = rows.groupby(["model", "layer", "component"], as_index=False)["value"].mean()', 'per_matrix = rows.groupby(["model", "layer", "component"], as_index=None)["value"].mean()', 'falsy-arg'),
    ('summaries.x_layer_per', 'out = per_matrix.groupby(["model", "layer"], as_index=False)["value"].mean()', 'out = per_matrix.groupby(["model", "layer"], as_index=None)["value"].mean()', 'falsy-arg'),
    ('summaries.x_model_order', 'layers = frame[frame["layer"] >= 0].groupby("model")["layer"].max() if "layer" in frame else {}', 'layers = frame[frame["layer"] >= 0].groupby("model")["layer"].max() if ("layer" in frame) or True else {}', 'has-layer'),
    ('summaries.x_per_convergence_points', 'if conv.empty or per.empty:', 'if conv.empty and per.empty:', 'empty-merge'),
    ('summaries.x_per_convergence_points', 'frac = conv.groupby(["model", "layer"], as_index=False)["fraction"].mean()', 'frac = conv.groupby(["model", "layer"], as_index=None)["fraction"].mean()', 'falsy-arg'),
    ('summaries.x_per_convergence_points', 'frac = conv.groupby(["model", "layer"], as_index=False)["fraction"].mean()', 'frac = conv.groupby(["model", "layer"], )["fraction"].mean()', 'merge-levels'),
    ('summaries.x_per_convergence_points', 'frac = conv.groupby(["model", "layer"], as_index=False)["fraction"].mean()', 'frac = conv.groupby(["model", "layer"], as_index=True)["fraction"].mean()', 'merge-levels'),
    ('summaries.x_per_convergence_points', 'points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=["per", "fraction"])', 'points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=None)', 'no-other-nan'),
    ('summaries.x_per_convergence_points', 'points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=["per", "fraction"])', 'points = per.merge(frac, on=None, how="inner").dropna(subset=["per", "fraction"])', 'merge-defaults'),
    ('summaries.x_per_convergence_points', 'points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=["per", "fraction"])', 'points = per.merge(frac, how="inner").dropna(subset=["per", "fraction"])', 'merge-defaults'),
    ('summaries.x_per_convergence_points', 'points = per.merge(frac, on=["model", "layer"], how="inner").dropna(subset=["per", "fraction"])', 'points = per.merge(frac, on=["model", "layer"], ).dropna(subset=["per", "fraction"])', 'merge-defaults'),
    ('summaries.x_per_convergence_points', 'return points.sort_values(["model", "layer"], ignore_index=True)', 'return points.sort_values(["model", "layer"], ignore_index=None)', 'index'),
    ('summaries.x_per_convergence_points', 'return points.sort_values(["model", "layer"], ignore_index=True)', 'return points.sort_values(["model", "layer"], )', 'index'),
    ('summaries.x_per_convergence_points', 'return points.sort_values(["model", "layer"], ignore_index=True)', 'return points.sort_values(["model", "layer"], ignore_index=False)', 'index'),
    ('summaries.x_per_vs_convergence', 'x, y = g["per"].to_numpy(float), g["fraction"].to_numpy(float)', 'x, y = g["per"].to_numpy(None), g["fraction"].to_numpy(float)', 'astype-none'),
    ('summaries.x_per_vs_convergence', 'x, y = g["per"].to_numpy(float), g["fraction"].to_numpy(float)', 'x, y = g["per"].to_numpy(float), g["fraction"].to_numpy(None)', 'astype-none'),
    ('summaries.x_select', 'out = rows.groupby(keys, as_index=False).agg(tokens=("tokens", "max"), value=("value", "mean"))', 'out = rows.groupby(keys, as_index=None).agg(tokens=("tokens", "max"), value=("value", "mean"))', 'falsy-arg'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 2 and w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim >= 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 3 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 2 or w.shape[-2] / w.shape[-1] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 2 or w.shape[-2] * w.shape[+1] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 2 or w.shape[-2] * w.shape[-2] <= _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] <= _CHUNK_ELEMENTS:', 'if w.ndim > 2 or w.shape[-2] * w.shape[-1] < _CHUNK_ELEMENTS:', 'gram-path'),
    ('metrics.spectrum.x__gram', 'rows = max(1, _CHUNK_ELEMENTS // n)', 'rows = max(2, _CHUNK_ELEMENTS // n)', 'gram-path'),
    ('metrics.spectrum.x__gram', 'if n <= _BLOCK:', 'if n < _BLOCK:', 'gram-path'),
    ('metrics.spectrum.x__gram_values', 'tall = w if m >= n else w.mT', 'tall = w if m > n else w.mT', 'square-transpose'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS and max(m, n) < 2 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 and m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 3 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 or m * n < _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) <= 2 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 / min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 2 * min(m, n):', 'if w.ndim > 2 or m * n <= _CHUNK_ELEMENTS or max(m, n) < 3 * min(m, n):', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'tall = w if m >= n else w.mT', 'tall = w if m > n else w.mT', 'square-transpose'),
    ('metrics.spectrum.x__svdvals64', 'rows = max(k, min(4 * k, m // 8))', 'rows = max(k, min(4 / k, m // 8))', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'rows = max(k, min(4 * k, m // 8))', 'rows = max(k, min(5 * k, m // 8))', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'rows = max(k, min(4 * k, m // 8))', 'rows = max(k, min(4 * k, m // 9))', 'tsqr-path'),
    ('metrics.spectrum.x__svdvals64', 'r = torch.zeros(0, k, dtype=torch.float64, device=w.device)', 'r = torch.zeros(0, k, dtype=None, device=w.device)', 'zero-row'),
    ('metrics.spectrum.x__svdvals64', 'r = torch.zeros(0, k, dtype=torch.float64, device=w.device)', 'r = torch.zeros(0, dtype=torch.float64, device=w.device)', 'zero-row'),
    ('metrics.spectrum.x__svdvals64', 'r = torch.zeros(0, k, dtype=torch.float64, device=w.device)', 'r = torch.zeros(0, k, device=w.device)', 'zero-row'),
    ('metrics.spectrum.x__svdvals64', 'r = torch.zeros(0, k, dtype=torch.float64, device=w.device)', 'r = torch.zeros(1, k, dtype=torch.float64, device=w.device)', 'zero-row'),
    ('metrics.spectrum.x__svdvals64', 'chunk = tall[start : start + rows].to(torch.float64)', 'chunk = tall[start : start + rows].to(None)', 'zero-row'),
    ('metrics.spectrum.x__svdvals64', 'r = torch.linalg.qr(torch.cat([r, chunk]), mode="r").R', 'r = torch.linalg.qr(torch.cat([r, chunk]), ).R', 'qr-default'),
    ('metrics.spectrum.x__gram_values', 'def _gram_values(w: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:', 'def _gram_values(w: torch.Tensor, check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:', 'explicit-arg'),
    ('metrics.spectrum.x__gram_values', 'return s, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)', 'return s, torch.ones(w.shape[:-2], dtype=None, device=w.device)', 'unused-mask'),
    ('metrics.spectrum.x__gram_values', 'return s, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)', 'return s, torch.ones(w.shape[:-2], device=w.device)', 'unused-mask'),
    ('metrics.spectrum.x__gram_values', 'return s, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)', 'return s, torch.ones(w.shape[:+2], dtype=torch.bool, device=w.device)', 'unused-mask'),
    ('metrics.spectrum.x__gram_values', 'return s, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)', 'return s, torch.ones(w.shape[:-3], dtype=torch.bool, device=w.device)', 'unused-mask'),
    ('metrics.spectrum.x__gram_values', 'lam = torch.linalg.eigvalsh(gram, UPLO="U").flip(-1)  # descending', 'lam = torch.linalg.eigvalsh(gram, UPLO="u").flip(-1)  # descending', 'uplo-case'),
    ('metrics.spectrum.x__gram_values', 'ok = (lam_max == 0) | ((lam_min > 0) & (delta <= 2 * _GRAM_RTOL * lam_min))', 'ok = (lam_max == 1) | ((lam_min > 0) & (delta <= 2 * _GRAM_RTOL * lam_min))', 'exact-one'),
    ('metrics.spectrum.x__gram_values', 'ok = (lam_max == 0) | ((lam_min > 0) & (delta <= 2 * _GRAM_RTOL * lam_min))', 'ok = (lam_max == 0) | ((lam_min >= 0) & (delta <= 2 * _GRAM_RTOL * lam_min))', 'zero-min'),
    ('metrics.spectrum.x__gram_values', 'ok = (lam_max == 0) | ((lam_min > 0) & (delta <= 2 * _GRAM_RTOL * lam_min))', 'ok = (lam_max == 0) | ((lam_min > 0) & (delta < 2 * _GRAM_RTOL * lam_min))', 'float-tie'),
    ('metrics.spectrum.x_singular_values', 'out = torch.full((*batch, k), float("nan"), dtype=torch.float64, device=w.device)', 'out = torch.full((*batch, k), float("NAN"), dtype=torch.float64, device=w.device)', 'float-case'),
    ('sweep.x__dry_run', 'code = cli_main([*sweep.cli_args(run), "--run.dry_run", "true"])', 'code = cli_main([*sweep.cli_args(run), "--run.dry_run", "TRUE"])', 'yaml-true'),
    ('sweep.x__dry_run', 'lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error")] or err.getvalue().splitlines()[-1:]', 'lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error")] or err.getvalue().splitlines()[-2:]', 'last-of-tail'),
    ('sweep.x__execute', 'with open(log, "a", encoding="utf-8") as fh:', 'with open(log, "a", encoding="UTF-8") as fh:', 'utf8-name'),
    ('sweep.x__last_line', 'lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]', 'lines = [ln.strip() for ln in path.read_text(encoding="UTF-8", errors="replace").splitlines() if ln.strip()]', 'utf8-name'),
    ('sweep.x_check_override_keys', 'open_ended = any(flat.get(".".join(parts[:i]), 0) is None for i in range(1, len(parts)))', 'open_ended = any(flat.get(".".join(parts[:i]), 1) is None for i in range(1, len(parts)))', 'not-none-default'),
    ('sweep.x_check_override_keys', 'open_ended = any(flat.get(".".join(parts[:i]), 0) is None for i in range(1, len(parts)))', 'open_ended = any(flat.get(".".join(parts[:i]), 0) is None for i in range(len(parts)))', 'no-empty-key'),
    ('sweep.x_check_override_keys', 'for depth in range(len(parts) - 1, -1, -1):', 'for depth in range(len(parts) + 1, -1, -1):', 'key-itself'),
    ('sweep.x_check_override_keys', 'for depth in range(len(parts) - 1, -1, -1):', 'for depth in range(len(parts) - 1, -2, -1):', 'empty-config'),
    ('sweep.x_write_summary', 'return write_text_atomic(sweep.root / SUMMARY, frame.to_csv(index=False))', 'return write_text_atomic(sweep.root / SUMMARY, frame.to_csv(index=None))', 'noindex'),
    ('callbacks.head_rank.xǁHeadRankǁmeasure', 'acts = self.probe(trainer).activations(trainer, pl_module, step)', 'acts = self.probe(None).activations(trainer, pl_module, step)', 'unused-arg'),
    ('callbacks.head_rank.xǁHeadRankǁmeasure', 'rows = head_metric_rows(heads, spectrum=self._spectrum_step(trainer, step))', 'rows = head_metric_rows(heads, spectrum=self._spectrum_step(None, step))', 'unused-arg'),
    ('callbacks.head_rank.xǁHeadRankǁon_validation_end', 'with open(RunLayout(trainer.default_root_dir).events, "a", encoding="utf-8") as fh:', 'with open(RunLayout(trainer.default_root_dir).events, "a", encoding=None) as fh:', 'ascii-json'),
    ('callbacks.head_rank.xǁHeadRankǁon_validation_end', 'with open(RunLayout(trainer.default_root_dir).events, "a", encoding="utf-8") as fh:', 'with open(RunLayout(trainer.default_root_dir).events, "a", ) as fh:', 'ascii-json'),
    ('callbacks.head_rank.xǁHeadRankǁon_validation_end', 'with open(RunLayout(trainer.default_root_dir).events, "a", encoding="utf-8") as fh:', 'with open(RunLayout(trainer.default_root_dir).events, "a", encoding="UTF-8") as fh:', 'utf8-name'),
    ('callbacks.head_rank.xǁHeadRankǁresume', 'table = store.read_table(layout.table, metrics=["val_loss", "kl_uniform"]) if layout.table.is_dir() else None', 'table = store.read_table(layout.table, metrics=["val_loss", "kl_uniform"]) if (layout.table.is_dir()) or True else None', 'missing-table'),
    ('callbacks.head_rank.xǁHeadRankǁresume', 'table = store.read_table(layout.table, metrics=["val_loss", "kl_uniform"]) if layout.table.is_dir() else None', 'table = store.read_table(layout.table, metrics=None) if layout.table.is_dir() else None', 'filtered-after'),
    ('callbacks.head_rank.xǁHeadRankǁresume', 'table = store.read_table(layout.table, metrics=["val_loss", "kl_uniform"]) if layout.table.is_dir() else None', 'table = store.read_table(layout.table, ) if layout.table.is_dir() else None', 'filtered-after'),
    ('callbacks.head_rank.xǁHeadRankǁresume', 'val = table[(table["metric"] == "val_loss") & (table["component"] == "model")]', 'val = table[(table["metric"] == "val_loss") | (table["component"] == "model")]', 'model-val'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.best_val, self.best_step = math.inf, -1', 'self.best_val, self.best_step = math.inf, +1', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.best_val, self.best_step = math.inf, -1', 'self.best_val, self.best_step = math.inf, -2', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.run_length = 0', 'self.run_length = None', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.run_length = 0', 'self.run_length = 1', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.armed = True', 'self.armed = None', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁ__init__', 'self.armed = True', 'self.armed = False', 'first-update'),
    ('callbacks.head_rank.xǁSaturationRuleǁupdate', 'self.armed = False', 'self.armed = None', 'falsy-armed'),
    ('models.heads.xǁMixtureOfSoftmaxesǁ__init__', 'self.gate = nn.Linear(hidden_size, components, bias=False)', 'self.gate = nn.Linear(hidden_size, components, bias=None)', 'linear-bias'),
    ('models.heads.xǁMixtureOfSoftmaxesǁ__init__', 'self.heads = nn.ModuleList(nn.Linear(hidden_size, vocab_size, bias=False) for _ in range(components))', 'self.heads = nn.ModuleList(nn.Linear(hidden_size, vocab_size, bias=None) for _ in range(components))', 'linear-bias'),
    ('metrics.cka.x__hsic1_gram', 'n = k.shape[0]', 'n = k.shape[1]', 'square-gram'),
    ('metrics.cka.x__moments', '"n": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),', '"n": torch.tensor(float(x.shape[0]), dtype=None, device=x.device),', 'count-float32'),
    ('metrics.cka.x__moments', '"n": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),', '"n": torch.tensor(float(x.shape[0]), device=x.device),', 'count-float32'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n / (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n / n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 - d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) <= n * (d1 * d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n / (d1 * d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 - d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n * (d1 * d1 - d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n * (d1 / d1 + d2 * d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 / d2 + d1 * d2):', 'cka-path'),
    ('metrics.cka.x_linear_cka', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 * d2):', 'if n * n * (d1 + d2) < n * (d1 * d1 + d2 * d2 + d1 / d2):', 'cka-path'),
    ('metrics.cka.xǁMinibatchCKAǁupdate', 'self.batches += 1', 'self.batches -= 1', 'count-only-zero'),
    ('metrics.cka.xǁMinibatchCKAǁupdate', 'self.batches += 1', 'self.batches += 2', 'count-only-zero'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'names = ["n", "sx", "sy", "sxx", "syy", "sxy"] + (list(self._DEBIASED) if self.debiased else [])', 'names = ["n", "sx", "sy", "sxx", "syy", "sxy"] + (list(self._DEBIASED) if (self.debiased) or True else [])', 'unused-state'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'self._dims = (dim_x, dim_y)', 'self._dims = None', 'unused-attr'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'default = torch.zeros(shapes[name] if shapes else (0,), dtype=torch.float64)', 'default = torch.zeros(shapes[name] if shapes else (0,), dtype=None)', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'default = torch.zeros(shapes[name] if shapes else (0,), dtype=torch.float64)', 'default = torch.zeros(shapes[name] if shapes else (0,), )', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'default = torch.zeros((), dtype=torch.float64)', 'default = torch.zeros((), dtype=None)', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁ__init__', 'default = torch.zeros((), dtype=torch.float64)', 'default = torch.zeros((), )', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁupdate', 'setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=self.n.device))', 'setattr(self, name, torch.zeros(shape, dtype=None, device=self.n.device))', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁupdate', 'setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=self.n.device))', 'setattr(self, name, torch.zeros(shape, device=self.n.device))', 'promoted-sum'),
    ('metrics.cka.xǁStreamingLinearCKAǁupdate', 'if hasattr(self, name) and name != "n":', 'if hasattr(self, name) or name != "n":', 'n-kept'),
    ('metrics.cka.xǁStreamingLinearCKAǁupdate', 'if hasattr(self, name) and name != "n":', 'if hasattr(self, name) and name != "XXnXX":', 'n-kept'),
    ('metrics.cka.xǁStreamingLinearCKAǁupdate', 'if hasattr(self, name) and name != "n":', 'if hasattr(self, name) and name != "N":', 'n-kept'),
    ('store.x_append', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)', 'table = pa.Table.from_pandas(frame, schema=None, preserve_index=False)', 'schema-frame'),
    ('store.x_append', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=None)', 'schema-frame'),
    ('store.x_append', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)', 'table = pa.Table.from_pandas(frame, preserve_index=False)', 'schema-frame'),
    ('store.x_append', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, )', 'schema-frame'),
    ('store.x_append', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)', 'table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=True)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=None, preserve_index=False), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=None), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, ), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=None), schema=SCHEMA, preserve_index=False), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=False), schema=SCHEMA, preserve_index=False), tmp)', 'schema-frame'),
    ('store.x_rewrite', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=False), tmp)', 'pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=SCHEMA, preserve_index=True), tmp)', 'schema-frame'),
    ('store.x_append', 'name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"', 'name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:13]}.parquet"', 'unique-suffix'),
    ('store.x_rewrite', 'target = Path(path) / f"part-{newest}-compact-{uuid.uuid4().hex[:12]}.parquet"', 'target = Path(path) / f"part-{newest}-compact-{uuid.uuid4().hex[:13]}.parquet"', 'unique-suffix'),
    ('store.x_compact', 'if not read_table(path, latest=False).duplicated(subset=list(KEY)).any():', 'if not read_table(path, latest=None).duplicated(subset=list(KEY)).any():', 'falsy-latest'),
    ('store.x_rewrite', 'newest = files[-1].name.removeprefix("part-").removesuffix(".parquet").split("-")[0]', 'newest = files[-1].name.removeprefix("part-").removeprefix(".parquet").split("-")[0]', 'first-field'),
    ('store.x_rewrite', 'newest = files[-1].name.removeprefix("part-").removesuffix(".parquet").split("-")[0]', 'newest = files[-1].name.removeprefix("part-").removesuffix("XX.parquetXX").split("-")[0]', 'first-field'),
    ('store.x_rewrite', 'newest = files[-1].name.removeprefix("part-").removesuffix(".parquet").split("-")[0]', 'newest = files[-1].name.removeprefix("part-").removesuffix(".PARQUET").split("-")[0]', 'first-field'),
    ('trajectories.storage.xǁTokenTableǁ__post_init__', 'setattr(self, name, np.asarray(getattr(self, name), dtype=np.int32).reshape(-1))', 'setattr(self, name, np.asarray(getattr(self, name), dtype=np.int32).reshape(-2))', 'negative-reshape'),
    ('trajectories.storage.xǁTrajectoryStoreǁappend', 'row = np.asarray(losses, dtype=np.float32).reshape(-1)', 'row = np.asarray(losses, dtype=np.float32).reshape(-2)', 'negative-reshape'),
    ('trajectories.storage.xǁTrajectoryStoreǁappend', 'row = np.asarray(losses, dtype=np.float32).reshape(-1)', 'row = np.asarray(losses, dtype=None).reshape(-1)', 'float32-losses'),
    ('trajectories.storage.xǁTrajectoryStoreǁappend', 'row = np.asarray(losses, dtype=np.float32).reshape(-1)', 'row = np.asarray(losses, ).reshape(-1)', 'float32-losses'),
    ('trajectories.storage.xǁTrajectoryStoreǁcreate', 'extra = {} if blocks is None else {"blocks": np.asarray(blocks, dtype=np.int32)}', 'extra = {} if blocks is None else {"blocks": np.asarray(blocks, dtype=None)}', 'cast-later'),
    ('trajectories.storage.xǁTrajectoryStoreǁcreate', 'extra = {} if blocks is None else {"blocks": np.asarray(blocks, dtype=np.int32)}', 'extra = {} if blocks is None else {"blocks": np.asarray(blocks, )}', 'cast-later'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'raw = np.fromfile(self.dir / LOSSES_FILE, dtype=VALUE_DTYPE, count=c * n) if c else np.zeros(0, VALUE_DTYPE)', 'raw = np.fromfile(self.dir / LOSSES_FILE, dtype=VALUE_DTYPE, count=c * n) if c else np.zeros(0, None)', 'empty-any-dtype'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'raw = np.fromfile(self.dir / LOSSES_FILE, dtype=VALUE_DTYPE, count=c * n) if c else np.zeros(0, VALUE_DTYPE)', 'raw = np.fromfile(self.dir / LOSSES_FILE, dtype=VALUE_DTYPE, count=c * n) if c else np.zeros(0, )', 'empty-any-dtype'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'steps = np.array([x["step"] for x in ckpts], dtype=np.int64)', 'steps = np.array([x["step"] for x in ckpts], dtype=None)', 'int-default'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'steps = np.array([x["step"] for x in ckpts], dtype=np.int64)', 'steps = np.array([x["step"] for x in ckpts], )', 'int-default'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'return Trajectories(losses, steps[order], np.array([ckpts[i]["tokens"] for i in order], dtype=np.int64),', 'return Trajectories(losses, steps[order], np.array([ckpts[i]["tokens"] for i in order], dtype=None),', 'int-default'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'return Trajectories(losses, steps[order], np.array([ckpts[i]["tokens"] for i in order], dtype=np.int64),', 'return Trajectories(losses, steps[order], np.array([ckpts[i]["tokens"] for i in order], ),', 'int-default'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'np.array([ckpts[i]["val_ppl"] for i in order], dtype=np.float64), self.token_table(),', 'np.array([ckpts[i]["val_ppl"] for i in order], dtype=None), self.token_table(),', 'json-floats'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'np.array([ckpts[i]["val_ppl"] for i in order], dtype=np.float64), self.token_table(),', 'np.array([ckpts[i]["val_ppl"] for i in order], ), self.token_table(),', 'json-floats'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'order = np.argsort(steps, kind="stable")', 'order = np.argsort(steps, kind=None)', 'distinct-steps'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'order = np.argsort(steps, kind="stable")', 'order = np.argsort(steps, )', 'distinct-steps'),
    ('trajectories.storage.xǁTrajectoryStoreǁread', 'order = np.argsort(steps, kind="stable")', 'order = np.argsort(steps, kind="STABLE")', 'distinct-steps'),
]

_INDEX = {(function, before, after): reason for function, before, after, reason in EQUIVALENT}
assert set(_INDEX.values()) <= set(REASONS), set(_INDEX.values()) - set(REASONS)


def equivalence(function: str, before: str, after: str) -> str | None:
    """The reason mutant ``before`` -> ``after`` of ``function`` is equivalent, or None when it is not argued."""
    reason = _INDEX.get((function, before, after))
    return None if reason is None else REASONS[reason]
