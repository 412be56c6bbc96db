"""Constants of the Wan export (no heavy imports: ops/export_wan.py reads them before
torch is imported)."""
import os

GENERATOR_VERSION = 1
OPSET = 18
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "models", "wan-tiny")
LATENT_CHANNELS, SPATIAL, TEMPORAL = 16, 8, 4
FLOW_SHIFT = 3.0
TINY_MAX_TOKENS = 32
SEED = 20240229

CASES = [
    dict(case="guided", prompt="a red fox runs through fresh snow at dawn", negative_prompt="",
         steps=4, cfg=5.0, width=32, height=32, frames=9, seed=11),
    dict(case="unguided", prompt="  A small boat drifts on a calm lake,\n under the  moon  ",
         negative_prompt=None, steps=3, cfg=1.0, width=48, height=32, frames=9, seed=12),
]

# Training text for the tiny tokenizer (English, video-prompt flavoured).
CORPUS = """
a red fox runs through fresh snow at dawn
a small boat drifts on a calm lake under the moon
a cat and a dog baking a cake together in a kitchen
the cat is carefully measuring flour while the dog is stirring the batter with a wooden spoon
the kitchen is cozy with sunlight streaming through the window
an astronaut rides a horse across the surface of the moon in slow motion
a drone shot of waves crashing against dark cliffs at sunset
a city street at night with neon lights reflected in the wet pavement
two children fly a bright kite on a windy green hill
a timelapse of clouds moving over snowy mountain peaks
a close up of rain drops falling on a still pond
an old man plays the violin in a quiet park in autumn
a golden retriever chases a ball along a sandy beach
a hummingbird hovers near red flowers in the morning light
a train crosses a stone bridge through a misty forest
a chef slices fresh vegetables on a wooden board
fireworks explode over a river during a summer festival
a panda eats bamboo in a lush bamboo forest
a woman walks through a field of sunflowers wearing a white dress
a robot paints a picture of the ocean in a bright studio
bright tones overexposed static blurred details subtitles style works paintings images
overall gray worst quality low quality jpeg compression residue ugly incomplete
extra fingers poorly drawn hands poorly drawn faces deformed disfigured misshapen limbs
fused fingers still picture messy background three legs many people in the background
walking backwards camera pans slowly to the left and then zooms in on the subject
cinematic lighting shallow depth of field high detail smooth motion
the snow sparkles as the sun rises over the quiet white valley
a flock of birds flies over a lake while the water ripples in the wind
a horse gallops across an open plain with dust rising behind it
the camera follows a cyclist racing down a winding mountain road
"""

# Word lists composed into extra training sentences (deterministically), so the tiny
# Unigram tokenizer has enough distinct text for a vocabulary of about a thousand pieces.
SUBJECTS = """fox wolf bear deer rabbit squirrel owl eagle sparrow heron swan duck goose horse pony
donkey camel elephant giraffe zebra lion tiger leopard cheetah monkey gorilla panda koala
kangaroo dolphin whale shark octopus jellyfish turtle frog lizard snake butterfly dragonfly
beetle spider child girl boy woman man grandmother grandfather dancer painter musician
farmer fisherman sailor pilot astronaut knight wizard robot samurai skateboarder surfer
climber runner swimmer cyclist photographer baker gardener""".split()
VERBS = """walks runs jumps dances swims flies climbs rolls spins floats glides wanders sprints
hops crawls slides paddles rides sings laughs sleeps watches explores searches plays
carries paints reads writes cooks builds throws catches waves drifts races stumbles
leaps marches tiptoes sways twirls""".split()
PLACES = """forest meadow desert canyon glacier volcano waterfall river valley mountain island
harbor lighthouse village castle cathedral library museum market bakery garden orchard
vineyard greenhouse subway rooftop alley bridge tunnel stadium carnival playground
swamp jungle savanna tundra reef lagoon cave cliff prairie highway""".split()
MOODS = """sunny cloudy foggy misty rainy stormy snowy windy golden silver purple orange
turquoise crimson emerald glowing shimmering sparkling dusty frozen blooming ancient
futuristic peaceful chaotic dreamy vibrant gloomy colorful quiet noisy crowded empty
gentle fierce""".split()
TIMES = """at sunrise, at noon, in the afternoon, at dusk, at midnight, during a thunderstorm,
in early spring, in late autumn, in the middle of winter, on a hot summer day,
under a starry sky, beneath the northern lights""".replace("\n", " ").split(", ")
CAMERA = """pans left, pans right, tilts up, tilts down, zooms in slowly, pulls back, tracks alongside,
circles around, stays perfectly still, shakes slightly, follows closely, rises overhead,
descends gently, cuts to a close up, holds a wide shot""".replace("\n", " ").split(", ")
OBJECTS = """lantern umbrella bicycle kite balloon guitar violin trumpet drum teapot candle
mirror clock compass telescope backpack basket bucket ladder rope anchor feather pebble
seashell crystal sword shield helmet crown scarf blanket pillow notebook pencil camera
"""
