"""The named presets every wire resolves its fields into: style templates, CLIP guidance settings, samplers.

One torch-free table per kind. Validation looks a client's name up here and hands the engine the typed
entry (a `StylePreset`, a `ClipGuidance`, a `Sampler`), never the name; a wire with names of its own
(A1111's "DPM++ 2M") maps them onto the same entries. The names here are this server's documented names,
which are Stability's (Bedrock's body for SDXL is Stability's JSON). Adding a preset is adding one entry.
"""

from __future__ import annotations

from sdxl_bedrock.schema import ClipGuidance, Sampler, StylePreset


def _styles(*presets: StylePreset) -> dict[str, StylePreset]:
    return {preset.name: preset for preset in presets}


STYLE_PRESETS: dict[str, StylePreset] = _styles(
    StylePreset(
        "3d-model",
        "professional 3d model {prompt} . octane render, highly detailed, volumetric, dramatic lighting",
        "ugly, deformed, noisy, low poly, blurry, painting",
    ),
    StylePreset(
        "analog-film",
        "analog film photo {prompt} . faded film, desaturated, 35mm photo, grainy, vignette, vintage, "
        "Kodachrome, Lomography, stained, highly detailed, found footage",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured",
    ),
    StylePreset(
        "anime",
        "anime artwork {prompt} . anime style, key visual, vibrant, studio anime, highly detailed",
        "photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    StylePreset(
        "cinematic",
        "cinematic film still {prompt} . shallow depth of field, vignette, highly detailed, high budget, "
        "bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy",
        "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, "
        "ugly, disfigured",
    ),
    StylePreset(
        "comic-book",
        "comic {prompt} . graphic illustration, comic art, graphic novel art, vibrant, highly detailed",
        "photograph, deformed, glitch, noisy, realistic, stock photo",
    ),
    StylePreset(
        "digital-art",
        "concept art {prompt} . digital artwork, illustrative, painterly, matte painting, highly detailed",
        "photo, photorealistic, realism, ugly",
    ),
    StylePreset(
        "enhance",
        "breathtaking {prompt} . award-winning, professional, highly detailed",
        "ugly, deformed, noisy, blurry, distorted, grainy",
    ),
    StylePreset(
        "fantasy-art",
        "ethereal fantasy concept art of {prompt} . magnificent, celestial, ethereal, painterly, epic, "
        "majestic, magical, fantasy art, cover art, dreamy",
        "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed, glitch, noise, "
        "noisy, off-center, cross-eyed, closed eyes, bad anatomy, ugly, disfigured, sloppy, duplicate, "
        "mutated, black and white",
    ),
    StylePreset(
        "isometric",
        "isometric style {prompt} . vibrant, beautiful, crisp, detailed, ultra detailed, intricate",
        "deformed, mutated, ugly, disfigured, blur, blurry, noise, noisy, realistic, photographic",
    ),
    StylePreset(
        "line-art",
        "line art drawing {prompt} . professional, sleek, modern, minimalist, graphic, line art, "
        "vector graphics",
        "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, off-center, cross-eyed, "
        "closed eyes, bad anatomy, ugly, disfigured, mutated, realism, realistic, impressionism, "
        "expressionism, oil, acrylic",
    ),
    StylePreset(
        "low-poly",
        "low-poly style {prompt} . low-poly game art, polygon mesh, jagged, blocky, wireframe edges, "
        "centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    StylePreset(
        "modeling-compound",
        "play-doh style {prompt} . sculpture, clay art, centered composition, Claymation",
        "sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    StylePreset(
        "neon-punk",
        "neonpunk style {prompt} . cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, crisp, "
        "detailed, sleek, ultramodern, magenta highlights, dark purple shadows, high contrast, cinematic, "
        "ultra detailed, intricate, professional",
        "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured",
    ),
    StylePreset(
        "origami",
        "origami style {prompt} . paper art, pleated paper, folded, origami art, pleats, cut and fold, "
        "centered composition",
        "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo",
    ),
    StylePreset(
        "photographic",
        "cinematic photo {prompt} . 35mm photograph, film, bokeh, professional, 4k, highly detailed",
        "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly",
    ),
    StylePreset(
        "pixel-art",
        "pixel-art {prompt} . low-res, blocky, pixel art style, 8-bit graphics",
        "sloppy, messy, blurry, noisy, highly detailed, ultra textured, photo, realistic",
    ),
    StylePreset(
        "tile-texture",
        "texture {prompt} top down close-up",
        "ugly, deformed, noisy, blurry",
    ),
)


def _guidance(*presets: ClipGuidance) -> dict[str, ClipGuidance]:
    return {preset.name: preset for preset in presets}


# `NONE`, the wire's word for no guidance, is no entry: the request then carries None.
NO_CLIP_GUIDANCE = "NONE"
CLIP_GUIDANCE_PRESETS: dict[str, ClipGuidance] = _guidance(
    ClipGuidance("FAST_BLUE", scale=100, cutouts=2, every=4),
    ClipGuidance("FAST_GREEN", scale=100, cutouts=4, every=4),
    ClipGuidance("SIMPLE", scale=100, cutouts=4, every=2),
    ClipGuidance("SLOW", scale=200, cutouts=8, every=2),
    ClipGuidance("SLOWER", scale=200, cutouts=8, every=1),
    ClipGuidance("SLOWEST", scale=300, cutouts=16, every=1),
)

# Stability's sampler names (k-diffusion's algorithms, `K_` prefixed), in the order its API lists them.
SAMPLER_NAMES: dict[str, Sampler] = {
    "DDIM": Sampler.DDIM,
    "DDPM": Sampler.DDPM,
    "K_DPMPP_2M": Sampler.DPMPP_2M,
    "K_DPMPP_2S_ANCESTRAL": Sampler.DPMPP_2S_ANCESTRAL,
    "K_DPM_2": Sampler.DPM_2,
    "K_DPM_2_ANCESTRAL": Sampler.DPM_2_ANCESTRAL,
    "K_EULER": Sampler.EULER,
    "K_EULER_ANCESTRAL": Sampler.EULER_ANCESTRAL,
    "K_HEUN": Sampler.HEUN,
    "K_LMS": Sampler.LMS,
}
DEFAULT_SAMPLER_NAME = "K_DPMPP_2M"


def sampler_name(sampler: Sampler) -> str:
    """The documented name of a sampler (`K_DPMPP_2M`)."""
    return next(name for name, entry in SAMPLER_NAMES.items() if entry is sampler)
