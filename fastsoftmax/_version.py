"""The package version, in a leaf module so that every layer can read it without importing the
package's top (which would be an upward import)."""
__version__ = "0.1.0"
