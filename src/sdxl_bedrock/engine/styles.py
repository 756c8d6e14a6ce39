"""Style presets as data: each wraps the positive prompt in a template and adds negative terms.

The templates follow the SDXL style prompts Stability published with Clipdrop; `{prompt}` is the user's text.
Adding a preset is adding one entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdxl_bedrock.schema import WeightedPrompt


@dataclass(frozen=True)
class StylePreset:
    template: str
    negative: str


STYLE_PRESETS: dict[str, StylePreset] = {
    "3d-model": StylePreset(
        "professional 3d model {prompt} . octane render, highly detailed, volumetric, dramatic lighting",
        "ugly, deformed, noisy, low poly, blurry, painting",
    ),
    "analog-film": StylePreset(
        "analog film photo {prompt} . faded film, desaturated, 35mm photo, grainy, vignette, vintage, "
        "Kodachrome, Lomography, stained, highly detailed, found footage",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured",
    ),
    "anime": StylePreset(
        "anime artwork {prompt} . anime style, key visual, vibrant, studio anime, highly detailed",
        "photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    "cinematic": StylePreset(
        "cinematic film still {prompt} . shallow depth of field, vignette, highly detailed, high budget, "
        "bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy",
        "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, "
        "ugly, disfigured",
    ),
    "comic-book": StylePreset(
        "comic {prompt} . graphic illustration, comic art, graphic novel art, vibrant, highly detailed",
        "photograph, deformed, glitch, noisy, realistic, stock photo",
    ),
    "digital-art": StylePreset(
        "concept art {prompt} . digital artwork, illustrative, painterly, matte painting, highly detailed",
        "photo, photorealistic, realism, ugly",
    ),
    "enhance": StylePreset(
        "breathtaking {prompt} . award-winning, professional, highly detailed",
        "ugly, deformed, noisy, blurry, distorted, grainy",
    ),
    "fantasy-art": StylePreset(
        "ethereal fantasy concept art of {prompt} . magnificent, celestial, ethereal, painterly, epic, "
        "majestic, magical, fantasy art, cover art, dreamy",
        "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed, glitch, noise, "
        "noisy, off-center, cross-eyed, closed eyes, bad anatomy, ugly, disfigured, sloppy, duplicate, "
        "mutated, black and white",
    ),
    "isometric": StylePreset(
        "isometric style {prompt} . vibrant, beautiful, crisp, detailed, ultra detailed, intricate",
        "deformed, mutated, ugly, disfigured, blur, blurry, noise, noisy, realistic, photographic",
    ),
    "line-art": StylePreset(
        "line art drawing {prompt} . professional, sleek, modern, minimalist, graphic, line art, "
        "vector graphics",
        "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, off-center, cross-eyed, "
        "closed eyes, bad anatomy, ugly, disfigured, mutated, realism, realistic, impressionism, "
        "expressionism, oil, acrylic",
    ),
    "low-poly": StylePreset(
        "low-poly style {prompt} . low-poly game art, polygon mesh, jagged, blocky, wireframe edges, "
        "centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "modeling-compound": StylePreset(
        "play-doh style {prompt} . sculpture, clay art, centered composition, Claymation",
        "sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "neon-punk": StylePreset(
        "neonpunk style {prompt} . cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, crisp, "
        "detailed, sleek, ultramodern, magenta highlights, dark purple shadows, high contrast, cinematic, "
        "ultra detailed, intricate, professional",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured",
    ),
    "origami": StylePreset(
        "origami style {prompt} . paper art, pleated paper, folded, origami art, pleats, cut and fold, "
        "centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    "photographic": StylePreset(
        "cinematic photo {prompt} . 35mm photograph, film, bokeh, professional, 4k, highly detailed",
        "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly",
    ),
    "pixel-art": StylePreset(
        "pixel-art {prompt} . low-res, blocky, pixel art style, 8-bit graphics",
        "sloppy, messy, blurry, noisy, highly detailed, ultra textured, photo, realistic",
    ),
    "tile-texture": StylePreset(
        "texture {prompt} top down close-up",
        "ugly, deformed, noisy, blurry",
    ),
}


def apply_style(
    preset_name: str | None,
    prompts: tuple[WeightedPrompt, ...],
    negative_prompts: tuple[WeightedPrompt, ...],
) -> tuple[tuple[WeightedPrompt, ...], tuple[WeightedPrompt, ...]]:
    """Wrap each positive prompt in the preset's template and add its negative terms (weight 1)."""
    if preset_name is None:
        return prompts, negative_prompts
    preset = STYLE_PRESETS[preset_name]
    styled = tuple(WeightedPrompt(preset.template.format(prompt=p.text), p.weight) for p in prompts)
    return styled, (*negative_prompts, WeightedPrompt(preset.negative, 1.0))
