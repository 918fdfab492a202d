"""amplify-serve built-in world: a numpy tabletop simulator, scripted expert and LIBERO-layout data generator.

Imports only numpy, h5py and imageio (never torch or amplify). See docs/world.md.
"""
