"""studies/noise-floor/README.md's numbers, re-derived by the commands the README shows, against the numbers it states
(tests/studies/numbers.py says how)."""

from __future__ import annotations

from tests.studies.readme_numbers import MINUS, Check, Table, measured_row, query, readme

NOISE = "noise-floor"
NOISE_RUNS = ('costlaw query --db studies/noise-floor/results.duckdb "select r.seed, '
              "json_extract_string(r.config_json, '$.config.data.long_docs') as long_docs, r.packing, r.val_loss, "
              "e.value as val_loss_se, r.final_loss, r.epochs, r.tokens_per_s, r.wall_s from runs r join evals e "
              "using (run_id) where e.eval = 'val_loss' and e.metric = 'loss_se' order by 2 desc, 3, 1\"")


def noise_mode(row: dict) -> str:
    return "files" if row["long_docs"] == "false" else "uniform" if row["packing"] == "uniform" else "dirs"


def test_noise_floor(cli):
    import statistics

    from scipy import stats

    text, c = readme(NOISE), Check(f"studies/{NOISE}/README.md")
    runs = query(cli, NOISE, NOISE_RUNS)
    assert len(runs) == 18
    by = {m: sorted((r for r in runs if noise_mode(r) == m), key=lambda r: r["seed"])
          for m in ("dirs", "files", "uniform")}
    t = Table(text, "mode", "val loss, seeds 0–5", where=c.where)
    loss = {m: [r["val_loss"] for r in rs] for m, rs in by.items()}
    for m, rs in by.items():
        x, n = loss[m], len(loss[m])
        assert [r["seed"] for r in rs] == list(range(6))
        sd = statistics.stdev(x)
        c.cell(t, m, "val loss, seeds 0–5", *x)
        c.cell(t, m, "mean", statistics.mean(x))
        c.cell(t, m, "sd", sd)
        c.cell(t, m, "sd, 90% interval", sd * ((n - 1) / stats.chi2.ppf(0.95, n - 1)) ** 0.5,
               sd * ((n - 1) / stats.chi2.ppf(0.05, n - 1)) ** 0.5)
        c.cell(t, m, "max − min", max(x) - min(x))
        se = [r["val_loss_se"] for r in rs]
        c.cell(t, m, "val set's own error (loss_se)", min(se), max(se))

    def ftest(a, b):
        f = statistics.variance(loss[a]) / statistics.variance(loss[b])
        return f, 2 * min(stats.f.cdf(f, 5, 5), stats.f.sf(f, 5, 5))

    f, p = ftest("dirs", "uniform")
    sd = {m: statistics.stdev(x) for m, x in loss.items()}
    mean = {m: statistics.mean(x) for m, x in loss.items()}
    c.phrase(text, f"seed sd {sd['uniform']:.4f} nats, against {sd['dirs']:.4f} for today's directory documents")
    c.phrase(text, f"variance ratio {f:.2f}, F test with 5 and 5 degrees of freedom p = {p:.3f}; Levene's test "
                   f"about the median p = {stats.levene(loss['dirs'], loss['uniform']).pvalue:.3f}")
    c.phrase(text, f"(F p = {ftest('dirs', 'files')[1]:.3f} against dirs, {ftest('uniform', 'files')[1]:.3f} "
                   "against uniform)")
    c.phrase(text, f"{mean['uniform']:.4f} against {mean['dirs']:.4f}**, {mean['dirs'] - mean['uniform']:.4f} nats "
                   f"lower on the mean (Welch p = "
                   f"{stats.ttest_ind(loss['dirs'], loss['uniform'], equal_var=False).pvalue:.4f})")
    assert max(loss["uniform"]) < min(loss["dirs"])  # "Every uniform seed is below every dirs seed."
    gap = {m: [r["final_loss"] - r["val_loss"] for r in rs] for m, rs in by.items()}

    def signed(v):
        return f"{v:+.3f}".replace("-", MINUS)

    c.phrase(text, f"{signed(min(gap['dirs']))} to {signed(max(gap['dirs']))} across the six dirs seeds (sd "
                   f"{statistics.stdev(gap['dirs']):.3f}), against {signed(min(gap['uniform']))} to "
                   f"{signed(max(gap['uniform']))} (sd {statistics.stdev(gap['uniform']):.3f})")
    se = [r["val_loss_se"] for r in runs]
    c.phrase(text, f"{min(se):.4f}–{max(se):.4f} nats over the 18 runs")
    epochs = {round(r["epochs"], 3) for r in runs}
    c.phrase(text, f"These runs took {min(epochs):.3f} of one")
    c.phrase(text, f"about {sd['uniform']:.3f} nats")
    row = measured_row(NOISE)
    c.phrase(row, f"{sd['uniform']:.3f} with uniform windows, {sd['files']:.3f} with file documents, "
                  f"{sd['dirs']:.3f} with directory documents")
    c.phrase(row, f"{mean['dirs'] - mean['uniform']:.3f} lower")
    c.phrase(row, f"{min(se):.4f}–{max(se):.4f}")
    c.done()
