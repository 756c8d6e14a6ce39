from sdxl_bedrock.cli import main

main()
