"""Table 1 and its mistakes table as LaTeX ``booktabs`` floats (``\\usepackage{booktabs}``)."""

from __future__ import annotations

from landmark_tl.core.hierarchy import TASKS
from landmark_tl.reporting.mistakes import MISTAKES_NOTE, mistakes_rows
from landmark_tl.reporting.table import Recommendation, Table

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "≈": r"$\approx$",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    ">": r"$>$",
    "<": r"$<$",
}


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_ESCAPES.get(char, char) for char in text)


def recommendation_sentence(rec: Recommendation | None) -> str:
    """The caption's closing sentence: the approach chosen on validation and its test gain."""
    if rec is None:
        return ""
    if not rec.beats_probe:
        outcome = "; nothing beats the linear probe"
    elif rec.gain is None:
        outcome = ""
    else:
        outcome = (
            f", test gain over the probe {rec.gain:+.3f} [{rec.gain_low:+.3f}, "
            f"{rec.gain_high:+.3f}], above it on {rec.wins} of {rec.splits} split(s)"
        )
    return (
        f" Recommended (chosen on validation landmark macro F1): {escape(rec.approach)}{outcome}."
    )


def latex_table(table: Table) -> str:
    """A ``table`` float: one row per approach, per task mean ± std, 95% CI and verdict
    (and the difference to the linear probe with its verdict, when there is a probe row);
    the best row's mean in bold; the caption says how the numbers were computed and, when
    the runs allow one, which approach is recommended."""
    probe = table.probe is not None
    spec = "lr" + ("rrll" if probe else "rrl") * len(TASKS)
    head = ["Approach", "Runs" if table.splits > 1 else "Seeds"]
    for task in TASKS:
        head += [f"{task.capitalize()} F1", "95\\% CI", "vs best"] + (["vs probe"] if probe else [])
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        cells = [escape(row.approach), str(len(row.seeds))]
        for task in TASKS:
            score = row.scores[task]
            mean = f"{score.mean:.3f}"
            mean = rf"\textbf{{{mean}}}" if score.mark == "best" else mean
            std = "" if score.std is None else rf" $\pm$ {score.std:.3f}"
            mark = score.mark + ("†" if score.fallback else "")
            cells += [mean + std, f"[{score.ci_low:.3f}, {score.ci_high:.3f}]", escape(mark)]
            if probe:
                versus = score.vs_probe
                cells.append(
                    "--" if versus is None else f"{versus.diff:+.3f} {escape(versus.verdict)}"
                )
        lines.append(" & ".join(cells) + r" \\")
    ranked = table.ranked_by or "test landmark macro F1"
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{Macro F1 on the test images, mean $\pm$ std over "
        rf"{'runs' if table.splits > 1 else 'seeds'}; 95\% percentile bootstrap intervals "
        rf"(B = {table.bootstrap}); verdicts against the best by a paired bootstrap, "
        rf"Holm-corrected. Rows ranked by {escape(ranked)}."
        rf"{recommendation_sentence(table.recommendation)}}}",
        r"\label{tab:approaches}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n" + mistakes_latex(table)


def mistakes_latex(table: Table) -> str:
    """The hierarchy-aware scores as a second ``table`` float (the rows of the Markdown
    section); empty when no run recorded them."""
    if not table.mistakes:
        return ""
    header, rows = mistakes_rows(table.rows, table.mistakes)
    lines = [
        "",
        r"\begin{table}[t]",
        r"\centering",
        f"\\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}",
        r"\toprule",
        " & ".join(escape(cell) for cell in header) + r" \\",
        r"\midrule",
        *(" & ".join(escape(cell) for cell in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{How bad the mistakes are (lower is better). {escape(MISTAKES_NOTE)}}}",
        r"\label{tab:mistakes}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
