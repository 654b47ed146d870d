"""Self-contained diffusers pipelines that guardgen writes into model folders.

Each file here imports only torch and diffusers, so it can be copied into a saved folder as
``pipeline_guardgen.py`` and named in ``model_index.json`` as ``["pipeline_guardgen", "ClassName"]``:
then stock ``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` loads it.
"""

from guardgen.models.pipelines.class_conditional import ClassConditionalPipeline
from guardgen.models.pipelines.one_step import OneStepPipeline
from guardgen.models.pipelines.text_conditional import TextConditionalPipeline

__all__ = ["ClassConditionalPipeline", "OneStepPipeline", "TextConditionalPipeline"]
