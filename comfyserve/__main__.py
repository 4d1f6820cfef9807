"""`python -m comfyserve` runs the server, like the console script."""

from comfyserve.cli import main

if __name__ == "__main__":
    main()
