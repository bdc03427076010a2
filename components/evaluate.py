"""Evaluate synthetic against real traffic: report plus KFP visualizations (CPU, cached)."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(data: Input[list[Dataset]], pcaps: Input[list[Dataset]], seed: int, report: Output[Dataset],
             metrics: Output[Metrics], confusion: Output[ClassificationMetrics], html: Output[HTML],
             markdown: Output[Markdown]):
    """Headline metrics (reference and synthetic rows), the train-on-synthetic confusion matrix, the HTML
    report and its Markdown summary show in the Kubeflow UI; ``report`` holds report.{json,md,html}."""
    from netdiff_lib import stages

    report.metadata.update(stages.evaluate_run(
        [d.path for d in data], [p.path for p in pcaps], report.path, seed=seed, metrics=metrics,
        confusion=confusion, html_path=html.path, markdown_path=markdown.path))
