from cato.cli import app

app()
