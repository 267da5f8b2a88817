"""The Gradio demo: generate with a method (and dense, to compare) on the built-in model or a local
pipeline, see the speed-up, the quality against dense, the per-layer summary and the block layout.

    ditaccel demo [--model DIR] [--port 7860]        # or: python demo/app.py

The method list is whatever ``ditaccel.patch`` accepts (presets and ``METHOD_CONFIGS``, caches
from ``CACHE_CONFIGS``), so a method added to the package appears here unchanged. Every error a
user can cause (a bad parameter, an unsupported model, out of memory) is shown as one readable
line and leaves the app working and the pipeline unpatched (``generation.Session`` patches on
entry and unpatches on exit of every generation).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from .generation import DEFAULT_PROMPT, GenerateSettings, Generation, GenerationError, Session, write_video
from .method_spec import CACHE_CONFIGS, DENSE, METHOD_CONFIGS
from .patching import step_ranges
from .pipelines.loading import BUILT_IN
from .presets import PRESETS

NO_CACHE = "none"
SUMMARY_COLUMNS = ["layer", "module", "method", "block density", "dense steps", "sparse steps", "reused steps"]
_LOG = logging.getLogger(__name__)


def method_choices() -> list[str]:
    return [DENSE] + sorted(set(PRESETS) | set(METHOD_CONFIGS))


def cache_choices() -> list[str]:
    return [NO_CACHE] + sorted(CACHE_CONFIGS)


def spec_text(name: str, parameters: str) -> str:
    """``name`` (a preset, or a config when ``parameters`` are given) as a method spec."""
    parameters = (parameters or "").strip()
    return f"{name}({parameters})" if parameters else name


def prompt_examples() -> list[str]:
    from .pipelines.procedural_clips import held_out_prompts

    return held_out_prompts()[:6]


def vocabulary_hint() -> str:
    from .pipelines.procedural_clips import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

    return (f"Built-in model vocabulary: colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; motions "
            f"{', '.join(MOTIONS)} (\"moving ...\" for directions); backgrounds {', '.join(BACKGROUNDS)}.")


class DemoState:
    """The loaded sessions (one per model and device, loaded on first use) and the output folder."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.out = Path(tempfile.mkdtemp(prefix="ditaccel_demo_"))
        self.count = 0  # videos written
        self.runs = 0  # generations asked for: the status line names its run

    def session(self, model: str) -> Session:
        model = (model or BUILT_IN).strip() or BUILT_IN
        if model not in self.sessions:
            if self.sessions:  # one pipeline at a time: a GPU would not hold every model the user tries
                import gc

                import torch

                self.sessions.clear()
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self.sessions[model] = Session(model, device=self.device, progress=True)
        return self.sessions[model]

    def run(self, model: str, settings: GenerateSettings) -> tuple[Session, Generation]:
        with self.lock:  # one generation at a time: the sessions' pipelines are shared
            session = self.session(model)
            return session, session.generate(settings)

    def video_path(self, stem: str) -> Path:
        self.count += 1
        return self.out / f"{self.count:04d}_{stem}.mp4"


def summary_rows(result: Generation) -> list[list]:
    if result.summary is None:
        return []
    return [[r["layer"], r["module"], r["method"], None if r["block_density"] is None else round(r["block_density"], 3),
             step_ranges(r["dense_steps"]), step_ranges(r["sparse_steps"]), step_ranges(r["reused_steps"])]
            for r in result.summary.rows]


def generate(state: DemoState, model, prompt, seed, steps, frames, height, width, method, parameters, cache,
             cache_parameters, compare):
    """The button's handler: (method video, dense video, readout, summary rows, block map image,
    block map caption, status). Never raises: errors become the status line."""
    state.runs += 1
    run = state.runs
    settings = GenerateSettings(
        prompt=prompt, method=spec_text(method, parameters), seed=int(seed or 0), steps=_int(steps),
        frames=_int(frames), height=_int(height), width=_int(width), compare=bool(compare),
        cache=None if cache in (None, NO_CACHE) else spec_text(cache, cache_parameters),
    )
    try:
        if settings.compare and settings.spec().is_dense:
            raise GenerationError("compare with dense needs a method other than dense")
        session, result = state.run(model, settings)
    except GenerationError as error:
        return _failed(run, str(error))
    except Exception as error:  # noqa: BLE001  (the app must keep working: one line, the details in the log)
        _LOG.exception("generation failed")
        return _failed(run, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}")
    scale = 4 if session.built_in else 1
    video = str(write_video(result.frames, state.video_path("method"), scale=scale))
    dense = None
    if result.dense_frames is not None:
        dense = str(write_video(result.dense_frames, state.video_path("dense"), scale=scale))
    picture = caption = None
    if result.block_map is not None:
        picture, caption = result.block_map.image(), result.block_map.caption()
    return video, dense, result.report(markdown=True), summary_rows(result), picture, caption, f"Run {run}: done."


def _failed(run: int, message: str):
    return None, None, "", [], None, None, f"**Run {run}: error:** {message}"


def _int(value) -> int | None:
    """A number box: empty or 0 leaves the model's default."""
    return int(value) if value else None


def build_app(model: str = BUILT_IN, device: str | None = None):
    import gradio as gr

    state = DemoState(device)
    with gr.Blocks(title="ditaccel demo") as app:
        gr.Markdown("# ditaccel: sparse attention and caching for video diffusion transformers\n"
                    "Generate with a method, compare with dense attention at the same seed, see the speed-up, the "
                    "quality against dense and which blocks the method computes.")
        with gr.Row():
            with gr.Column(scale=1):
                model_box = gr.Textbox(value=model, label="Model: 'built-in' or a local diffusers pipeline directory",
                                       elem_id="model")
                prompt_box = gr.Textbox(value=DEFAULT_PROMPT, label="Prompt", elem_id="prompt")
                gr.Examples(prompt_examples(), inputs=prompt_box, label="Held-out prompts of the built-in model")
                gr.Markdown(vocabulary_hint())
                with gr.Row():
                    seed_box = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    steps_box = gr.Number(value=None, precision=0, label="Steps (0: the model's)", elem_id="steps")
                with gr.Row():
                    frames_box = gr.Number(value=None, precision=0, label="Frames (0: the model's)", elem_id="frames")
                    height_box = gr.Number(value=None, precision=0, label="Height (0: the model's)", elem_id="height")
                    width_box = gr.Number(value=None, precision=0, label="Width (0: the model's)", elem_id="width")
                with gr.Row():
                    method_box = gr.Dropdown(method_choices(), value="radial", label="Method", elem_id="method")
                    parameters_box = gr.Textbox(value="", label="Method parameters (empty: the preset), e.g. "
                                                "decay=0.5 or window=(8, 8, 8), dense_steps=0.3", elem_id="parameters")
                with gr.Row():
                    cache_box = gr.Dropdown(cache_choices(), value=NO_CACHE, label="Attention caching", elem_id="cache")
                    cache_parameters_box = gr.Textbox(value="", label="Cache parameters, e.g. period=3",
                                                      elem_id="cache_parameters")
                compare_box = gr.Checkbox(value=True, label="Compare with dense", elem_id="compare")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    method_video = gr.Video(label="Method", elem_id="method_video", autoplay=True, loop=True)
                    dense_video = gr.Video(label="Dense", elem_id="dense_video", autoplay=True, loop=True)
                numbers = gr.Markdown("", elem_id="readout")
                block_image = gr.Image(label="Blocks: computed (blue), approximated (orange), skipped (grey); "
                                       "rows = query blocks, columns = key blocks", elem_id="block_map",
                                       interactive=False)
                block_caption = gr.Markdown("", elem_id="block_caption")
                table = gr.Dataframe(headers=SUMMARY_COLUMNS, label="Per attention layer", elem_id="summary",
                                     interactive=False)

        def run(model, prompt, seed, steps, frames, height, width, method, parameters, cache, cache_parameters,
                compare, progress=gr.Progress(track_tqdm=True)):  # noqa: B008  (gradio's progress idiom)
            return generate(state, model, prompt, seed, steps, frames, height, width, method, parameters, cache,
                            cache_parameters, compare)

        event = button.click(run, inputs=[model_box, prompt_box, seed_box, steps_box, frames_box, height_box, width_box,
                                          method_box, parameters_box, cache_box, cache_parameters_box, compare_box],
                             outputs=[method_video, dense_video, numbers, table, block_image, block_caption, status])
        # A stopped run's result is dropped; the generation it started still ends (and unpatches) first.
        stop.click(lambda: "Stopped.", None, status, cancels=[event])
    app.queue(default_concurrency_limit=1)
    return app


def launch(model: str = BUILT_IN, device: str | None = None, port: int = 7860, share: bool = False, **kwargs):
    app = build_app(model, device)
    app.launch(server_name="127.0.0.1", server_port=port, share=share, **kwargs)
    return app
